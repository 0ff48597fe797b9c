//! pinned-kernels: CPU feature detection, GEMM microkernels per ISA, and the
//! model ops built on them.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cpu;

pub use cpu::{cache_sizes, cpu_features, request_amx_permission, CacheSizes, CpuFeatures};
