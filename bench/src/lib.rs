//! pinned-bench
//!
//! - [`gemm_bench`]: `pinned bench gemm`.
//! - [`lowp_bench`]: `pinned bench gemm --precision bf16|int8`.
//! - [`ring_bench`]: `pinned bench ring`.
//! - [`harness`]: `pinned run`, `pinned sweep`, `pinned compare`.
//! - [`e2e`]: `pinned bench e2e`, pinned beside ONNX Runtime (`bench/peers/`).

pub mod e2e;
pub mod gemm_bench;
pub mod harness;
pub mod lowp_bench;
mod race;
pub mod ring_bench;
