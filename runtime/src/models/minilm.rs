//! MiniLM-L6 (`all-MiniLM-L6-v2`, a BERT encoder) loaded from its
//! `config.json` and `model.safetensors`: the description, the weights
//! converted and packed per precision into node-placed memory, and the
//! tokenizer when the directory ships one. The forward pass is in
//! `minilm_forward.rs`.

use std::path::{Path, PathBuf};

use pinned_allocator::IdList;
use pinned_kernels::gemm::MatRef;
use pinned_kernels::precision::{KernelPaths, PackedWeights, Precision};

use super::safetensors_load::{LoadError, LoadErrorKind, WeightsFile};
use super::store::{self, matrix_bytes, vector_bytes, NodeStore, WeightPlacement};
use super::team::ModelTeam;
use super::tokenize::TextTokenizer;

/// The directory variable tests and the CLI read: it holds
/// `model.safetensors`, `tokenizer.json` and `config.json`.
pub const MINILM_DIR_VAR: &str = "PINNED_MINILM_DIR";

/// The fields of a BERT `config.json` the encoder needs.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let err = |kind| LoadError::new(path, None, kind);
        let text = std::fs::read_to_string(path).map_err(|e| err(LoadErrorKind::Io(e)))?;
        let cfg: Self =
            serde_json::from_str(&text).map_err(|e| err(LoadErrorKind::Config(e.to_string())))?;
        cfg.check().map_err(|m| err(LoadErrorKind::Config(m)))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        let dims = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        if dims.contains(&0) {
            return Err(format!("zero dimension in {self:?}"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` (only `gelu`, the erf form, is implemented)",
                self.hidden_act
            ));
        }
        if let Some(kind) = self
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(format!(
                "position_embedding_type `{kind}` (only `absolute`)"
            ));
        }
        // Token ids travel as f32 through the runtime: exact below 2^24.
        if self.vocab_size > 1 << 24 {
            return Err(format!("vocab_size {} above 2^24", self.vocab_size));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(format!("layer_norm_eps {}", self.layer_norm_eps));
        }
        // Sizes computed at load must not overflow (a config is input too).
        let h = self.hidden_size;
        let per_layer = h.checked_mul(4 * h + 2 * self.intermediate_size);
        let embeds =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size).checked_mul(h);
        if per_layer
            .and_then(|l| l.checked_mul(self.num_hidden_layers))
            .is_none()
            || embeds.is_none()
            || h > 1 << 16
        {
            return Err(format!("dimensions too large: {self:?}"));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// How to load a model: weight precision, placement, kernels, and the
/// longest sequence a request may carry (sizes the scratch).
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub precision: Precision,
    pub placement: WeightPlacement,
    pub paths: KernelPaths,
    /// Longest request, in tokens; at most `max_position_embeddings`.
    pub max_seq: usize,
    /// Threads one request may use when it is the only one in flight
    /// (the partition's worker count; 1: the worker alone).
    /// `PINNED_MODEL_THREADS` overrides it.
    pub threads: usize,
    /// Where the team's helper threads may run (the partition's CPUs);
    /// `None`: wherever the loading thread may.
    pub cpus: Option<IdList>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            precision: Precision::F32,
            placement: WeightPlacement::Os,
            paths: KernelPaths::best(),
            max_seq: 512,
            threads: 1,
            cpus: None,
        }
    }
}

impl LoadOptions {
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }
    pub fn placement(mut self, placement: WeightPlacement) -> Self {
        self.placement = placement;
        self
    }
    pub fn max_seq(mut self, max_seq: usize) -> Self {
        self.max_seq = max_seq;
        self
    }
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }
    /// Keeps the team's helper threads on `cpus` (the partition's).
    pub fn cpus(mut self, cpus: IdList) -> Self {
        self.cpus = Some(cpus);
        self
    }
}

/// One encoder layer's weights (`[in] x [out]` views, packed).
pub(crate) struct LayerWeights {
    /// Q, K, V fused: `hidden x 3 hidden`, columns `[q | k | v]`.
    pub qkv: PackedWeights<'static>,
    pub qkv_bias: &'static [f32],
    pub attn_out: PackedWeights<'static>,
    pub attn_out_bias: &'static [f32],
    pub attn_ln: (&'static [f32], &'static [f32]),
    pub ffn_in: PackedWeights<'static>,
    pub ffn_in_bias: &'static [f32],
    pub ffn_out: PackedWeights<'static>,
    pub ffn_out_bias: &'static [f32],
    pub ffn_ln: (&'static [f32], &'static [f32]),
}

/// Every weight of one copy, borrowed from that copy's store.
pub(crate) struct Weights {
    pub word: &'static [f32],
    pub position: &'static [f32],
    pub token_type: &'static [f32],
    pub embed_ln: (&'static [f32], &'static [f32]),
    pub layers: Vec<LayerWeights>,
}

/// A copy of the weights and the memory it lives in.
///
/// Invariant: every reference in `weights` points into `store`'s mapping.
/// Fields drop in declaration order, so `weights` goes before `store`.
pub(crate) struct Replica {
    pub weights: Weights,
    store: NodeStore,
}

/// all-MiniLM-L6-v2 (or any BERT encoder of the same form) ready to serve.
///
/// As a runtime [`Model`](crate::Model), one request is `2 * max_seq`
/// f32: the token ids, then the attention mask (1 for a token, 0 for
/// padding), each `max_seq` long; its sequence ends after the last mask 1.
/// The output is the L2-normalised mean-pooled embedding (`hidden_size`).
pub struct MiniLm {
    pub(crate) config: BertConfig,
    pub(crate) options: LoadOptions,
    pub(crate) replicas: Vec<Replica>,
    /// Replica each CPU reads (empty: always the first).
    pub(crate) copy_of_cpu: Vec<u8>,
    pub(crate) name: String,
    pub(crate) tokenizer: Option<TextTokenizer>,
    pub(crate) weights_file: PathBuf,
    pub(crate) team: ModelTeam,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("name", &self.name)
            .field("precision", &self.options.precision)
            .field("placement", &self.options.placement)
            .field("threads", &self.team.threads())
            .finish()
    }
}

impl MiniLm {
    /// Loads `dir/config.json`, `dir/model.safetensors` and, when present,
    /// `dir/tokenizer.json`.
    pub fn load_dir(dir: impl AsRef<Path>, options: LoadOptions) -> Result<Self, LoadError> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(TextTokenizer::from_file(&tok_path, options.max_seq)?)
        } else {
            None
        };
        let mut model = Self::load(config, &dir.join("model.safetensors"), options)?;
        model.tokenizer = tokenizer;
        Ok(model)
    }

    /// Loads the weights of `config`'s model from a safetensors file.
    pub fn load(
        config: BertConfig,
        weights: &Path,
        options: LoadOptions,
    ) -> Result<Self, LoadError> {
        Self::from_weights(config, WeightsFile::open(weights)?, options)
    }

    /// Loads from an opened weights file, which is dropped (unmapped) at
    /// the end: every tensor has been copied into the model's own memory.
    pub fn from_weights(
        config: BertConfig,
        file: WeightsFile,
        options: LoadOptions,
    ) -> Result<Self, LoadError> {
        let weights = file.path().to_path_buf();
        let weights = weights.as_path();
        let longest = config
            .max_position_embeddings
            .min(super::minilm_forward::MAX_SEQ);
        if options.max_seq == 0 || options.max_seq > longest {
            return Err(LoadError::new(
                weights,
                None,
                LoadErrorKind::Config(format!(
                    "max_seq {} outside 1..={}",
                    options.max_seq, longest
                )),
            ));
        }
        let err = |kind| LoadError::new(weights, None, kind);
        let copies = options.placement.copies().map_err(err)?;
        let bytes = store_bytes(&config, options.precision, &options.paths);
        let mut replicas = Vec::with_capacity(copies.len());
        for (policy, _) in &copies {
            let mut store = NodeStore::new(bytes, policy).map_err(err)?;
            // SAFETY: the weights go into a `Replica` beside `store`, which
            // drops them first (Replica's invariant).
            let weights = unsafe { load_weights(&file, &config, &options, &mut store)? };
            replicas.push(Replica { weights, store });
        }
        let copy_nodes: Vec<Option<usize>> = copies.iter().map(|c| c.1).collect();
        let name = format!(
            "minilm-{}l-{}h-{}",
            config.num_hidden_layers, config.hidden_size, options.precision
        );
        let threads = super::team::threads_or_env(options.threads);
        let team = ModelTeam::new(threads, options.cpus.as_ref())
            .map_err(|e| err(LoadErrorKind::Io(e)))?;
        Ok(Self {
            team,
            config,
            copy_of_cpu: store::copy_index_by_cpu(&copy_nodes),
            replicas,
            name,
            tokenizer: None,
            weights_file: file.path().to_path_buf(),
            options,
        })
        // `file` (the mapping) drops here: everything was copied out.
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }
    pub fn precision(&self) -> Precision {
        self.options.precision
    }
    pub fn placement(&self) -> &WeightPlacement {
        &self.options.placement
    }
    pub fn max_seq(&self) -> usize {
        self.options.max_seq
    }
    pub fn hidden(&self) -> usize {
        self.config.hidden_size
    }
    pub fn weights_file(&self) -> &Path {
        &self.weights_file
    }
    /// Bytes of node memory one copy of the weights takes.
    pub fn weight_bytes(&self) -> usize {
        self.replicas.first().map_or(0, |r| r.store.bytes())
    }
    /// For each copy of the weights, the nodes of its first and last page
    /// (to check a placement took effect).
    pub fn weight_nodes(&self) -> Vec<(Option<usize>, Option<usize>)> {
        self.replicas.iter().map(|r| r.store.nodes()).collect()
    }
    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }
    /// The kernel path the weight GEMMs run on (`avx512`, `amx-bf16`...).
    pub fn kernel_path(&self) -> &'static str {
        let p = &self.options.paths;
        match self.options.precision {
            Precision::F32 => p.f32.name(),
            Precision::Bf16 => p.bf16.describe(pinned_kernels::lowp::Elem::Bf16),
            Precision::Int8 => p.int8.describe(pinned_kernels::lowp::Elem::Int8),
        }
    }
}

/// Bytes one copy needs: embeddings, per-layer vectors and packed matrices.
fn store_bytes(c: &BertConfig, precision: Precision, paths: &KernelPaths) -> usize {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let embeds = vector_bytes(c.vocab_size * h)
        + vector_bytes(c.max_position_embeddings * h)
        + vector_bytes(c.type_vocab_size * h)
        + 2 * vector_bytes(h);
    let vectors = vector_bytes(3 * h) + vector_bytes(i) + 6 * vector_bytes(h);
    let matrices = matrix_bytes(h, 3 * h, precision, paths)
        + matrix_bytes(h, h, precision, paths)
        + matrix_bytes(h, i, precision, paths)
        + matrix_bytes(i, h, precision, paths);
    embeds + c.num_hidden_layers * (vectors + matrices)
}

/// Tensor names with or without the `bert.` prefix of `BertForX` exports.
struct Names {
    prefix: &'static str,
}

impl Names {
    fn detect(file: &WeightsFile) -> Self {
        let bare = file.shape("embeddings.word_embeddings.weight").is_ok();
        let prefixed = file.shape("bert.embeddings.word_embeddings.weight").is_ok();
        Self {
            prefix: if !bare && prefixed { "bert." } else { "" },
        }
    }
    fn get(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// Reads every tensor, converts, checks, and copies or packs it into `store`.
///
/// # Safety
/// The returned weights borrow `store`'s memory: drop them before it.
unsafe fn load_weights(
    file: &WeightsFile,
    c: &BertConfig,
    options: &LoadOptions,
    store: &mut NodeStore,
) -> Result<Weights, LoadError> {
    let names = Names::detect(file);
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let (precision, paths) = (options.precision, &options.paths);
    let err = |name: &str, kind| file.error(name, kind);
    let mut buf = Vec::new();
    let mut vector =
        |store: &mut NodeStore, name: &str, shape: &[usize]| -> Result<&'static [f32], LoadError> {
            let full = names.get(name);
            file.read_f32_into(&full, shape, &mut buf)?;
            // SAFETY: forwarded to our caller.
            unsafe { store.vector(&buf) }.map_err(|k| err(&full, k))
        };
    let word = vector(
        store,
        "embeddings.word_embeddings.weight",
        &[c.vocab_size, h],
    )?;
    let position = vector(
        store,
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, h],
    )?;
    let token_type = vector(
        store,
        "embeddings.token_type_embeddings.weight",
        &[c.type_vocab_size, h],
    )?;
    let embed_ln = (
        vector(store, "embeddings.LayerNorm.weight", &[h])?,
        vector(store, "embeddings.LayerNorm.bias", &[h])?,
    );
    // A PyTorch Linear stores `[out][in]`; the GEMM wants `in x out`.
    let matrix = |store: &mut NodeStore, name: &str, w: &[f32], out: usize, inp: usize| {
        let view = MatRef::new(w, out, inp, inp).map_err(|e| err(name, LoadErrorKind::Gemm(e)))?;
        // SAFETY: forwarded to our caller.
        unsafe { store.matrix(view.t(), precision, paths) }.map_err(|k| err(name, k))
    };
    let mut layers = Vec::with_capacity(c.num_hidden_layers);
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("encoder.layer.{l}.{s}");
        let mut qkv_w = Vec::with_capacity(3 * h * h);
        let mut qkv_b = Vec::with_capacity(3 * h);
        for part in ["query", "key", "value"] {
            let wname = names.get(&p(&format!("attention.self.{part}.weight")));
            qkv_w.extend(file.tensor_f32(&wname, &[h, h])?);
            let bname = names.get(&p(&format!("attention.self.{part}.bias")));
            qkv_b.extend(file.tensor_f32(&bname, &[h])?);
        }
        let qkv_name = names.get(&p("attention.self"));
        let qkv = matrix(store, &qkv_name, &qkv_w, 3 * h, h)?;
        // SAFETY: forwarded to our caller.
        let qkv_bias = unsafe { store.vector(&qkv_b) }.map_err(|k| err(&qkv_name, k))?;
        let dense = |store: &mut NodeStore, name: &str, out: usize, inp: usize| {
            let full = names.get(&p(name));
            let w = file.tensor_f32(&full, &[out, inp])?;
            matrix(store, &full, &w, out, inp)
        };
        let attn_out = dense(store, "attention.output.dense.weight", h, h)?;
        let ffn_in = dense(store, "intermediate.dense.weight", i, h)?;
        let ffn_out = dense(store, "output.dense.weight", h, i)?;
        layers.push(LayerWeights {
            qkv,
            qkv_bias,
            attn_out,
            attn_out_bias: vector(store, &p("attention.output.dense.bias"), &[h])?,
            attn_ln: (
                vector(store, &p("attention.output.LayerNorm.weight"), &[h])?,
                vector(store, &p("attention.output.LayerNorm.bias"), &[h])?,
            ),
            ffn_in,
            ffn_in_bias: vector(store, &p("intermediate.dense.bias"), &[i])?,
            ffn_out,
            ffn_out_bias: vector(store, &p("output.dense.bias"), &[h])?,
            ffn_ln: (
                vector(store, &p("output.LayerNorm.weight"), &[h])?,
                vector(store, &p("output.LayerNorm.bias"), &[h])?,
            ),
        });
    }
    Ok(Weights {
        word,
        position,
        token_type,
        embed_ln,
        layers,
    })
}
