//! pinned-bench
//!
//! - [`harness`]: `pinned run`, `pinned sweep`, `pinned compare`.

pub mod harness;
