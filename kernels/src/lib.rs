//! pinned-kernels: CPU feature detection, GEMM microkernels per ISA, and the
//! model ops built on them.
//!
//! - [`isa`]: ISA tokens (`Avx512::try_new()`, ...) and the [`Isa`] force
//!   switch (`PINNED_ISA=scalar|avx2|avx512`).
//! - [`gemm`]: fp32 GEMM with pre-packed B, fused epilogues, caller-owned
//!   scratch and threads. See its module docs for the API.
//! - [`lowp`]: bf16 and int8 GEMM (AMX tiles, AVX-512 dot products, a
//!   portable fallback) on weights converted at load; [`precision`] picks
//!   per layer; [`amx`] holds the tile configuration and probes.
//! - [`ops`]: layernorm, softmax, GELU, add, mean-pool, L2-normalise.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod amx;
pub mod bf16;
pub mod cpu;
pub mod gemm;
pub mod isa;
pub mod lowp;
pub mod ops;
pub mod precision;
pub mod quant;
pub mod simd;

pub use cpu::{cache_sizes, cpu_features, request_amx_permission, CacheSizes, CpuFeatures};
pub use isa::{Isa, IsaError};
