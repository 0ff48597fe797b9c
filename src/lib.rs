//! pinned: a CPU inference runtime that owns placement.
//!
//! The Rust API re-exports the workspace crates; the C ABI lives in [`ffi`].
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod config;
pub mod ffi;
pub mod info;
pub mod link;

pub use pinned_allocator as allocator;
pub use pinned_kernels as kernels;
pub use pinned_runtime as runtime;
