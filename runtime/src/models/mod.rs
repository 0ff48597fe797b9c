//! Real models on the runtime: weights from safetensors files converted
//! and packed into node-placed memory, served through [`Model`](crate::Model).
//!
//! - [`safetensors_load`]: the mapped, validated weights file and the
//!   typed [`LoadError`] (file, tensor, kind).
//! - [`minilm`]: all-MiniLM-L6-v2 (BERT encoder) from `config.json` +
//!   `model.safetensors` (+ `tokenizer.json`), fp32 / bf16 / int8 weights.
//! - [`mlp`]: a dense MLP from a small JSON manifest and a weights file.
//! - [`WeightPlacement`]: one copy on a node, one per node, or interleaved.

mod convert;
pub mod embed;
pub mod minilm;
mod minilm_attention;
mod minilm_forward;
pub mod mlp;
pub mod safetensors_load;
mod store;
pub(crate) mod team;
mod team_placement;
pub mod tokenize;

pub use embed::{embed, EmbedRequest};
pub use minilm::{BertConfig, LoadOptions, MiniLm, MINILM_DIR_VAR};
pub use mlp::{Mlp, MlpManifest};
pub use safetensors_load::{LoadError, LoadErrorKind, WeightsFile};
pub use store::WeightPlacement;
pub use team::MODEL_THREADS_ENV;
pub use tokenize::{Encoded, TextTokenizer};
