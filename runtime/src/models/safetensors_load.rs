//! A weights file, mapped with `memmap2` and validated with the
//! `safetensors` crate once (header, dtypes, shapes, offsets in bounds and
//! non-overlapping, data covering the file exactly), then read tensor by
//! tensor into f32 with the checks a model needs (dtype, shape, finite).
//!
//! The mapping is private to this value: it is dropped when the loader is
//! done, after every tensor was copied into node-bound memory (a
//! file-backed shared mapping cannot be placed with `mbind`).

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use pinned_kernels::gemm::GemmError;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::convert;
use crate::memory::MemoryError;

/// Why a model could not be loaded: which file, which tensor (when one is
/// to blame), and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {kind}", file.display(), tensor_label(tensor))]
pub struct LoadError {
    pub file: PathBuf,
    pub tensor: Option<String>,
    pub kind: LoadErrorKind,
}

fn tensor_label(tensor: &Option<String>) -> String {
    tensor
        .as_ref()
        .map(|t| format!(", tensor `{t}`"))
        .unwrap_or_default()
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a valid safetensors file: {0}")]
    Format(String),
    #[error("missing")]
    Missing,
    #[error("dtype {found} not supported here (expected {expected})")]
    Dtype {
        found: String,
        expected: &'static str,
    },
    #[error("shape {found:?}, expected {expected:?}")]
    Shape {
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{count} non-finite value(s), the first {value} at flat index {index}")]
    NonFinite {
        index: usize,
        value: f32,
        count: usize,
    },
    #[error("bad model description: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("packing weights: {0}")]
    Gemm(#[from] GemmError),
    #[error("node memory: {0}")]
    Memory(Box<MemoryError>),
}

impl From<MemoryError> for LoadErrorKind {
    fn from(e: MemoryError) -> Self {
        Self::Memory(Box::new(e))
    }
}

impl LoadError {
    pub fn new(file: impl Into<PathBuf>, tensor: Option<&str>, kind: LoadErrorKind) -> Self {
        Self {
            file: file.into(),
            tensor: tensor.map(str::to_owned),
            kind,
        }
    }
}

/// A validated safetensors file, mapped read-only.
///
/// Invariant: `metadata` was validated against `map` by
/// `SafeTensors::read_metadata`: every tensor's `data_offsets` lie inside
/// `map[data_start..]`, match `shape * size(dtype)`, and do not overlap.
pub struct WeightsFile {
    path: PathBuf,
    map: Mmap,
    metadata: Metadata,
    data_start: usize,
}

impl std::fmt::Debug for WeightsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightsFile")
            .field("path", &self.path)
            .field("bytes", &self.map.len())
            .finish()
    }
}

impl WeightsFile {
    /// Maps and validates `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref().to_path_buf();
        let err = |kind| LoadError::new(&path, None, kind);
        let file = File::open(&path).map_err(|e| err(LoadErrorKind::Io(e)))?;
        // SAFETY: the mapping is read-only and private to this value; the
        // file could still be truncated by another process while mapped
        // (SIGBUS on access), which no reader of a mapped file can rule
        // out: weights files are not expected to change while loading.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(LoadErrorKind::Io(e)))?;
        Self::validate(path, map)
    }

    /// Validates a file's bytes held in memory (tests, the fuzz target);
    /// `path` names them in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: &[u8]) -> Result<Self, LoadError> {
        let path = path.into();
        let io = |e| LoadError::new(&path, None, LoadErrorKind::Io(e));
        let mut anon = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        anon.copy_from_slice(bytes);
        let map = anon.make_read_only().map_err(io)?;
        Self::validate(path, map)
    }

    fn validate(path: PathBuf, map: Mmap) -> Result<Self, LoadError> {
        match SafeTensors::read_metadata(&map) {
            Ok((header_len, metadata)) => Ok(Self {
                path,
                data_start: 8 + header_len,
                map,
                metadata,
            }),
            Err(e) => {
                let (tensor, kind) = format_error(e);
                Err(LoadError::new(path, tensor.as_deref(), kind))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, in file order.
    pub fn names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }

    /// The shape of `name`, or a `Missing` error.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, LoadError> {
        self.metadata
            .info(name)
            .map(|i| i.shape.clone())
            .ok_or_else(|| self.error(name, LoadErrorKind::Missing))
    }

    /// `name` as f32, checked to be a float tensor of exactly `shape` with
    /// only finite values.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let mut out = Vec::new();
        self.read_f32_into(name, shape, &mut out)?;
        Ok(out)
    }

    /// As [`Self::tensor_f32`], reusing `out`'s allocation.
    pub fn read_f32_into(
        &self,
        name: &str,
        shape: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<(), LoadError> {
        let info = self
            .metadata
            .info(name)
            .ok_or_else(|| self.error(name, LoadErrorKind::Missing))?;
        if !convert::is_float(info.dtype) {
            return Err(self.error(
                name,
                LoadErrorKind::Dtype {
                    found: info.dtype.to_string(),
                    expected: "F32, F16 or BF16",
                },
            ));
        }
        if info.shape != shape {
            return Err(self.error(
                name,
                LoadErrorKind::Shape {
                    expected: shape.to_vec(),
                    found: info.shape.clone(),
                },
            ));
        }
        let (start, end) = info.data_offsets;
        // Validated at open (struct invariant); `get` keeps a bug from
        // becoming a panic all the same.
        let bytes = self
            .map
            .get(self.data_start + start..self.data_start + end)
            .ok_or_else(|| {
                self.error(name, LoadErrorKind::Format("offsets out of bounds".into()))
            })?;
        convert::to_f32(info.dtype, bytes, out);
        if let Some((index, value, count)) = convert::first_non_finite(out) {
            return Err(self.error(
                name,
                LoadErrorKind::NonFinite {
                    index,
                    value,
                    count,
                },
            ));
        }
        Ok(())
    }

    /// The dtype of `name` (for reports), if present.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.metadata.info(name).map(|i| i.dtype)
    }

    pub(crate) fn error(&self, tensor: &str, kind: LoadErrorKind) -> LoadError {
        LoadError::new(&self.path, Some(tensor), kind)
    }
}

/// Splits the crate's error into the tensor it names (if any) and our kind.
fn format_error(e: SafeTensorError) -> (Option<String>, LoadErrorKind) {
    match e {
        SafeTensorError::InvalidOffset(name) => (
            Some(name),
            LoadErrorKind::Format(
                "data offsets out of bounds, overlapping or not matching dtype x shape".into(),
            ),
        ),
        SafeTensorError::TensorNotFound(name) => (Some(name), LoadErrorKind::Missing),
        SafeTensorError::IoError(io) => (None, LoadErrorKind::Io(io)),
        SafeTensorError::HeaderTooSmall => (
            None,
            LoadErrorKind::Format("file shorter than its 8-byte header length".into()),
        ),
        SafeTensorError::InvalidHeaderLength => (
            None,
            LoadErrorKind::Format("header longer than the file".into()),
        ),
        SafeTensorError::MetadataIncompleteBuffer => (
            None,
            LoadErrorKind::Format(
                "tensor data does not cover the file exactly (truncated or trailing bytes)".into(),
            ),
        ),
        other => (None, LoadErrorKind::Format(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_tensor() {
        let e = LoadError::new(
            "/m/w.safetensors",
            Some("fc.weight"),
            LoadErrorKind::Missing,
        );
        assert_eq!(
            e.to_string(),
            "/m/w.safetensors, tensor `fc.weight`: missing"
        );
        let e = LoadError::new("/m/w.safetensors", None, LoadErrorKind::Format("x".into()));
        assert_eq!(
            e.to_string(),
            "/m/w.safetensors: not a valid safetensors file: x"
        );
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let e = WeightsFile::open("/nonexistent/pinned/w.safetensors").unwrap_err();
        assert!(matches!(e.kind, LoadErrorKind::Io(_)), "{e}");
    }
}
