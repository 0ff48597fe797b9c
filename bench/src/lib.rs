//! pinned-bench
//!
//! - [`gemm_bench`]: `pinned bench gemm`.
//! - [`ring_bench`]: `pinned bench ring`.
//! - [`harness`]: `pinned run`, `pinned sweep`, `pinned compare`.

pub mod gemm_bench;
pub mod harness;
pub mod ring_bench;
