//! MiniLM's forward pass on the kernels, and its place in the runtime.
//!
//! A batch's sequences are packed back to back (no padding rows): the
//! weight GEMMs see `M = total tokens`, attention runs per sequence and
//! head on strided views of the fused QKV rows (`minilm_attention.rs`),
//! and each sequence's output is its mask-weighted mean, L2-normalised.
//! A request alone in flight runs its GEMMs and attention on the model's
//! team (`team.rs`), else on its worker alone. Nothing allocates.

use pinned_kernels::gemm::{Epilogue, MatMut, MatRef};

use super::minilm::{MiniLm, Weights};
use super::minilm_attention::{attention_floats, AttentionIo};
use super::store;
use crate::model::{Model, ModelError, Scratch, ScratchSize};
use pinned_kernels::ops::{self, OpsError};

/// Length of a request: one past its last mask 1 (0 when all padding).
pub(crate) fn seq_len(mask: &[f32]) -> usize {
    mask.iter().rposition(|m| *m != 0.0).map_or(0, |i| i + 1)
}

/// Longest sequence a request may carry (sizes the per-request keep
/// flags on the stack).
pub(crate) const MAX_SEQ: usize = 4096;

/// The mask as keep flags for the ops, `None` when every position counts
/// (the usual case once trailing padding is cut).
pub(crate) fn keep_flags<'k>(mask: &[f32], buf: &'k mut [bool; MAX_SEQ]) -> Option<&'k [bool]> {
    if mask.iter().all(|m| *m != 0.0) {
        return None;
    }
    let keep = &mut buf[..mask.len()];
    for (k, m) in keep.iter_mut().zip(mask) {
        *k = *m != 0.0;
    }
    Some(keep)
}

#[cold]
#[inline(never)]
pub(crate) fn op(e: OpsError) -> ModelError {
    ModelError::Shape(e.to_string())
}

/// Activation buffers carved from the scratch floats, for `t` tokens.
struct Buffers<'s> {
    x: &'s mut [f32],
    qkv: &'s mut [f32],
    ctx: &'s mut [f32],
    h1: &'s mut [f32],
    ffn: &'s mut [f32],
    attention: &'s mut [f32],
}

impl MiniLm {
    /// Floats of activations for `tokens` tokens, plus one attention work
    /// buffer per thread.
    fn floats_needed(&self, tokens: usize) -> usize {
        let (h, i, s) = (
            self.config.hidden_size,
            self.config.intermediate_size,
            self.options.max_seq,
        );
        tokens * (6 * h + i) + self.team.threads() * attention_floats(s, self.config.head_dim())
    }

    fn carve<'s>(&self, floats: &'s mut [f32], tokens: usize, threads: usize) -> Buffers<'s> {
        let (h, i, s) = (
            self.config.hidden_size,
            self.config.intermediate_size,
            self.options.max_seq,
        );
        let (x, rest) = floats.split_at_mut(tokens * h);
        let (qkv, rest) = rest.split_at_mut(tokens * 3 * h);
        let (ctx, rest) = rest.split_at_mut(tokens * h);
        let (h1, rest) = rest.split_at_mut(tokens * h);
        let (ffn, rest) = rest.split_at_mut(tokens * i);
        Buffers {
            x,
            qkv,
            ctx,
            h1,
            ffn,
            attention: &mut rest[..threads * attention_floats(s, self.config.head_dim())],
        }
    }

    /// Checks every request of the batch; returns the total token count.
    fn check_inputs(&self, batch: usize, inputs: &[f32]) -> Result<usize, ModelError> {
        let s = self.options.max_seq;
        let vocab = self.config.vocab_size as f32;
        let mut total = 0;
        for (b, req) in inputs.chunks_exact(2 * s).take(batch).enumerate() {
            let (ids, mask) = req.split_at(s);
            if let Some(t) = mask.iter().position(|m| *m != 0.0 && *m != 1.0) {
                return Err(bad_input(b, t, "mask", mask[t]));
            }
            let len = seq_len(mask);
            if let Some(t) = ids[..len]
                .iter()
                .position(|&id| !(id >= 0.0 && id < vocab && id.fract() == 0.0))
            {
                return Err(bad_input(b, t, "token id", ids[t]));
            }
            total += len;
        }
        Ok(total)
    }

    /// The forward pass on one weight copy.
    fn forward(
        &self,
        w: &Weights,
        batch: usize,
        inputs: &[f32],
        outputs: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        let cfg = &self.config;
        let (h, s) = (cfg.hidden_size, self.options.max_seq);
        let lease = self.team.enter();
        let team = lease.team();
        let threads = self.team.threads();
        let eps = cfg.layer_norm_eps as f32;
        let paths = &self.options.paths;
        let total = self.check_inputs(batch, inputs)?;
        let (floats, bytes) = scratch.parts();
        let need = self.scratch_size(batch);
        if floats.len() < need.floats || bytes.len() < need.bytes {
            return Err(ModelError::Scratch {
                what: "minilm floats or bytes",
                needed: need.floats.max(need.bytes),
                got: floats.len().min(bytes.len()),
            });
        }
        let buf = self.carve(floats, total, threads);
        let isa = paths.f32;
        let mut keep_buf = [false; MAX_SEQ];
        let requests = || {
            inputs
                .chunks_exact(2 * s)
                .take(batch)
                .map(|r| r.split_at(s))
        };

        // Embeddings: word + position + token type 0, then layernorm.
        let mut row = 0;
        for (ids, mask) in requests() {
            for (pos, &id) in ids[..seq_len(mask)].iter().enumerate() {
                let out = &mut buf.x[row * h..(row + 1) * h];
                let word = &w.word[id as usize * h..][..h];
                let position = &w.position[pos * h..][..h];
                for (((o, a), b), c) in out
                    .iter_mut()
                    .zip(word)
                    .zip(position)
                    .zip(&w.token_type[..h])
                {
                    *o = a + b + c;
                }
                row += 1;
            }
        }
        ops::layernorm(isa, buf.x, h, w.embed_ln.0, w.embed_ln.1, eps).map_err(op)?;

        for layer in &w.layers {
            // Q, K and V in one GEMM: qkv = x W_qkv + b.
            layer.qkv.gemm(
                team,
                paths,
                1.0,
                MatRef::new(buf.x, total, h, h)?,
                0.0,
                MatMut::new(buf.qkv, total, 3 * h, 3 * h)?,
                &Epilogue::new().bias(layer.qkv_bias),
                bytes,
            )?;
            let io = AttentionIo {
                qkv: buf.qkv,
                ctx: buf.ctx,
                work: buf.attention,
            };
            self.attention(team, batch, inputs, io)?;
            // h1 = layernorm(ctx W_o + b_o + x)
            layer.attn_out.gemm(
                team,
                paths,
                1.0,
                MatRef::new(buf.ctx, total, h, h)?,
                0.0,
                MatMut::new(buf.h1, total, h, h)?,
                &Epilogue::new().bias(layer.attn_out_bias).residual(buf.x, h),
                bytes,
            )?;
            ops::layernorm(isa, buf.h1, h, layer.attn_ln.0, layer.attn_ln.1, eps).map_err(op)?;
            // x = layernorm(gelu(h1 W_1 + b_1) W_2 + b_2 + h1)
            let i = cfg.intermediate_size;
            layer.ffn_in.gemm(
                team,
                paths,
                1.0,
                MatRef::new(buf.h1, total, h, h)?,
                0.0,
                MatMut::new(buf.ffn, total, i, i)?,
                &Epilogue::new().bias(layer.ffn_in_bias).gelu_erf(),
                bytes,
            )?;
            layer.ffn_out.gemm(
                team,
                paths,
                1.0,
                MatRef::new(buf.ffn, total, i, i)?,
                0.0,
                MatMut::new(buf.x, total, h, h)?,
                &Epilogue::new().bias(layer.ffn_out_bias).residual(buf.h1, h),
                bytes,
            )?;
            ops::layernorm(isa, buf.x, h, layer.ffn_ln.0, layer.ffn_ln.1, eps).map_err(op)?;
        }

        // Mean pooling over the mask, then L2 normalisation.
        let mut start = 0;
        for ((_, mask), out) in requests().zip(outputs.chunks_exact_mut(h)) {
            let len = seq_len(mask);
            let keep = keep_flags(&mask[..len], &mut keep_buf);
            ops::mean_pool(isa, &buf.x[start * h..(start + len) * h], h, keep, out).map_err(op)?;
            ops::l2_normalize(isa, out, h, 1e-12).map_err(op)?;
            start += len;
        }
        lease.finish(total);
        Ok(())
    }

    /// Writes one request's input (`ids`, `mask`, same length, at most
    /// `max_seq`) into `dst` (`input_len()` floats), padding with zeros.
    pub fn encode_request(
        &self,
        ids: &[u32],
        mask: &[u32],
        dst: &mut [f32],
    ) -> Result<(), ModelError> {
        let s = self.options.max_seq;
        if ids.len() != mask.len() || ids.len() > s || dst.len() != 2 * s {
            return Err(ModelError::Shape(format!(
                "{} ids and {} mask values into {} floats: need equal lengths <= {s} and {} floats",
                ids.len(),
                mask.len(),
                dst.len(),
                2 * s
            )));
        }
        let (id_dst, mask_dst) = dst.split_at_mut(s);
        id_dst.fill(0.0);
        mask_dst.fill(0.0);
        for (d, &v) in id_dst.iter_mut().zip(ids) {
            *d = v as f32;
        }
        for (d, &v) in mask_dst.iter_mut().zip(mask) {
            *d = v as f32;
        }
        Ok(())
    }

    /// Embeds a batch of tokenised sentences outside the runtime (own
    /// scratch; allocates): one `hidden`-long vector per sentence.
    pub fn embed_ids(&self, batch: &[(&[u32], &[u32])]) -> Result<Vec<Vec<f32>>, ModelError> {
        let n = batch.len();
        let mut inputs = vec![0.0; n * self.input_len()];
        for ((ids, mask), dst) in batch.iter().zip(inputs.chunks_exact_mut(self.input_len())) {
            self.encode_request(ids, mask, dst)?;
        }
        let mut scratch = Scratch::standalone(self.scratch_size(n))
            .map_err(|e| ModelError::Shape(e.to_string()))?;
        let mut out = vec![0.0; n * self.output_len()];
        self.run(n, &inputs, &mut out, &mut scratch)?;
        Ok(out
            .chunks_exact(self.output_len())
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Tokenises and embeds texts (needs the directory's tokenizer.json).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        let tok = self.tokenizer.as_ref().ok_or_else(|| {
            ModelError::Shape("no tokenizer.json was loaded with this model".into())
        })?;
        let encoded = texts
            .iter()
            .map(|t| tok.encode(t).map_err(ModelError::Shape))
            .collect::<Result<Vec<_>, _>>()?;
        let batch: Vec<(&[u32], &[u32])> =
            encoded.iter().map(|e| (&e.ids[..], &e.mask[..])).collect();
        self.embed_ids(&batch)
    }
}

#[cold]
#[inline(never)]
fn bad_input(request: usize, position: usize, what: &str, value: f32) -> ModelError {
    ModelError::Shape(format!(
        "request {request}: {what} {value} at position {position} is not valid"
    ))
}

impl Model for MiniLm {
    fn name(&self) -> &str {
        &self.name
    }

    /// A sequence of `min(128, max_seq)` tokens: `[CLS]`, then word pieces
    /// cycling through a fixed set of common BERT ids, then `[SEP]`; mask
    /// all 1. Ids are taken modulo the vocabulary, so small test models
    /// get valid ids too.
    fn sample_input(&self, input: &mut [f32]) {
        const CLS: usize = 101;
        const SEP: usize = 102;
        const WORDS: [usize; 8] = [1996, 3231, 2003, 1037, 6251, 2005, 7953, 1012];
        let vocab = self.config.vocab_size.max(1);
        let id = |token: usize| (token % vocab) as f32;
        let s = self.options.max_seq;
        let len = s.min(128);
        if input.len() != 2 * s || len < 2 {
            input.fill(0.0);
            return;
        }
        let (ids, mask) = input.split_at_mut(s);
        ids.fill(0.0);
        mask.fill(0.0);
        for (i, id_slot) in ids[..len].iter_mut().enumerate() {
            *id_slot = id(WORDS[i % WORDS.len()]);
        }
        ids[0] = id(CLS);
        ids[len - 1] = id(SEP);
        mask[..len].fill(1.0);
    }

    fn input_len(&self) -> usize {
        2 * self.options.max_seq
    }

    fn output_len(&self) -> usize {
        self.config.hidden_size
    }

    fn scratch_size(&self, max_batch: usize) -> ScratchSize {
        let s = self.options.max_seq;
        let tokens = max_batch.max(1) * s;
        let (paths, threads) = (&self.options.paths, self.team.threads());
        let weight_gemms = self.replicas.first().map_or(0, |r| {
            let l = &r.weights.layers;
            l.iter()
                .flat_map(|l| [&l.qkv, &l.attn_out, &l.ffn_in, &l.ffn_out])
                // Enough for every call of up to `tokens` rows.
                .map(|w| w.scratch_bytes(tokens, threads, paths))
                .max()
                .unwrap_or(0)
        });
        ScratchSize {
            floats: self.floats_needed(tokens),
            bytes: weight_gemms,
        }
    }

    fn run(
        &self,
        batch: usize,
        inputs: &[f32],
        outputs: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        if inputs.len() < batch * self.input_len() || outputs.len() < batch * self.output_len() {
            return Err(ModelError::Shape(format!(
                "batch {batch}: {} inputs, {} outputs",
                inputs.len(),
                outputs.len()
            )));
        }
        let copy = store::current_copy(&self.copy_of_cpu).min(self.replicas.len() - 1);
        self.forward(
            &self.replicas[copy].weights,
            batch,
            inputs,
            outputs,
            scratch,
        )
    }
}
