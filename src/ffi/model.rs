//! Which model a partition serves, as a C struct.

use std::sync::Arc;

use pinned_runtime::{DenseMlp, Model, DEFAULT_MLP};

use super::error::pinned_status;
use super::guard::FfiError;

/// Model kinds (`pinned_model_config.kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum pinned_model_kind {
    /// The built-in dense MLP with deterministic weights from `seed`;
    /// `widths` (input, hidden..., output) or NULL for the default
    /// 1024 -> 4096 -> 1024 -> 4096 -> 1024.
    PINNED_MODEL_MLP = 0,
}

/// A model to load into a partition.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct pinned_model_config {
    /// A `pinned_model_kind` value.
    pub kind: u32,
    /// MLP layer widths, `n_widths` of them (at least 2), or NULL.
    pub widths: *const usize,
    pub n_widths: usize,
    /// Seed of the deterministic MLP weights.
    pub seed: u64,
}

/// # Safety
/// `widths` must be NULL or valid for `n_widths` reads.
pub(crate) unsafe fn build_model(c: &pinned_model_config) -> Result<Arc<dyn Model>, FfiError> {
    let bad_model = |e: pinned_runtime::ModelError| {
        FfiError::new(pinned_status::PINNED_BAD_MODEL, e.to_string())
    };
    match c.kind {
        0 => {
            let widths: &[usize] = if c.widths.is_null() {
                &DEFAULT_MLP
            } else {
                // SAFETY: non-NULL and valid for `n_widths` reads per the contract.
                unsafe { std::slice::from_raw_parts(c.widths, c.n_widths) }
            };
            Ok(Arc::new(DenseMlp::new(widths, c.seed).map_err(bad_model)?))
        }
        other => Err(FfiError::invalid(format!(
            "model.kind = {other} is not a pinned_model_kind value"
        ))),
    }
}
