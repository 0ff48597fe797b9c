//! Which model a partition serves, as a C struct.

use std::ffi::c_char;
use std::path::PathBuf;

use crate::config::ModelSpec;

use super::guard::{c_str, FfiError};

/// Model kinds (`pinned_model_config.kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum pinned_model_kind {
    /// The built-in dense MLP with deterministic weights from `seed`;
    /// `widths` (input, hidden..., output) or NULL for the default
    /// 1024 -> 4096 -> 1024 -> 4096 -> 1024. fp32 only.
    PINNED_MODEL_MLP = 0,
    /// A BERT sentence encoder such as all-MiniLM-L6-v2: `path` is the
    /// directory with `config.json` and `model.safetensors`. A request's
    /// input is `2 * max_seq` floats: token ids, then the attention mask.
    PINNED_MODEL_MINILM = 1,
    /// A dense MLP from a JSON manifest (`path`) naming the tensors of a
    /// safetensors file.
    PINNED_MODEL_MLP_MANIFEST = 2,
}

/// Weight precisions (`pinned_model_config.precision`); `pinned_info_json`
/// says which run natively (`cpu.precisions`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum pinned_precision {
    PINNED_PRECISION_F32 = 0,
    PINNED_PRECISION_BF16 = 1,
    PINNED_PRECISION_INT8 = 2,
}

/// A model to load into a partition. Its weights (the built-in MLP's
/// too) are packed into memory placed as the partition's placement says.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct pinned_model_config {
    /// A `pinned_model_kind` value.
    pub kind: u32,
    /// `PINNED_MODEL_MLP`: layer widths, `n_widths` of them (at least 2), or NULL.
    pub widths: *const usize,
    pub n_widths: usize,
    /// `PINNED_MODEL_MLP`: seed of the deterministic weights.
    pub seed: u64,
    /// `PINNED_MODEL_MINILM`: model directory; `PINNED_MODEL_MLP_MANIFEST`:
    /// manifest file. NUL-terminated; ignored (may be NULL) for the MLP.
    pub path: *const c_char,
    /// A `pinned_precision` value (every kind: the built-in MLP too).
    pub precision: u32,
    /// `PINNED_MODEL_MINILM`: longest request in tokens; 0 = 512.
    pub max_seq: u32,
}

/// The model the struct describes, as the configuration type.
///
/// # Safety
/// `widths` must be NULL or valid for `n_widths` reads; `path` NULL or
/// NUL-terminated.
pub(crate) unsafe fn model_spec(c: &pinned_model_config) -> Result<ModelSpec, FfiError> {
    let precision = match c.precision {
        0 => "f32",
        1 => "bf16",
        2 => "int8",
        other => {
            return Err(FfiError::invalid(format!(
                "model.precision = {other} is not a pinned_precision value (0 f32, 1 bf16, 2 int8)"
            )))
        }
    };
    let path = || -> Result<PathBuf, FfiError> {
        // SAFETY: NULL or NUL-terminated per the contract.
        Ok(PathBuf::from(unsafe { c_str(c.path, "model.path") }?))
    };
    match c.kind {
        0 => {
            let widths = if c.widths.is_null() {
                None
            } else {
                // SAFETY: non-NULL and valid for `n_widths` reads per the contract.
                Some(unsafe { std::slice::from_raw_parts(c.widths, c.n_widths) }.to_vec())
            };
            Ok(ModelSpec::Mlp {
                widths,
                seed: c.seed,
                precision: Some(precision.to_owned()),
            })
        }
        1 => Ok(ModelSpec::Minilm {
            dir: path()?,
            precision: Some(precision.to_owned()),
            max_seq: (c.max_seq != 0).then_some(c.max_seq as usize),
        }),
        2 => Ok(ModelSpec::Manifest {
            path: path()?,
            precision: Some(precision.to_owned()),
        }),
        other => Err(FfiError::invalid(format!(
            "model.kind = {other} is not a pinned_model_kind value"
        ))),
    }
}
