//! pinned-bench
//!
//! - [`gemm_bench`]: `pinned bench gemm`.
//! - [`harness`]: `pinned run`, `pinned sweep`, `pinned compare`.

pub mod gemm_bench;
pub mod harness;
