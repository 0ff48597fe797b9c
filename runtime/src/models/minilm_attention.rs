//! MiniLM's self-attention, `softmax(Q K^T / sqrt d) V` per sequence and
//! head, on strided views of the fused QKV rows, with the query rows of
//! every sequence split over the request's team.
//!
//! Thread `t` of `T` owns query rows `[t len / T, (t + 1) len / T)` of
//! each sequence: it writes only those rows of the context, its own score
//! matrix (`max_seq^2` floats at `t max_seq^2`) and its own GEMM workspace
//! (`attention_scratch` bytes at `t` times that), and reads Q, K, V.

use std::sync::Mutex;

use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, Team};
use pinned_kernels::{ops, Isa};

use super::minilm::MiniLm;
use super::minilm_forward::{keep_flags, op, seq_len, MAX_SEQ};
use crate::model::ModelError;

/// A pointer handed to the team's threads; each derives disjoint slices
/// from it (see the module invariant).
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: threads write disjoint ranges through it (module invariant),
// and the owner does not touch the buffer while the team runs.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so closures capture the whole wrapper).
    fn ptr(self) -> *mut T {
        self.0
    }
}

/// The buffers one attention pass works in.
pub(crate) struct AttentionIo<'a> {
    /// `tokens x 3 hidden`: each row `[q | k | v]`.
    pub qkv: &'a [f32],
    /// `tokens x hidden`, written.
    pub ctx: &'a mut [f32],
    /// `threads x max_seq^2`.
    pub scores: &'a mut [f32],
    /// `threads x attention_scratch_bytes()`.
    pub bytes: &'a mut [u8],
}

/// GEMM workspace bytes one thread's attention needs for sequences of up
/// to `max_seq` tokens and heads of `d`, a multiple of 64 (so each
/// thread's share starts aligned like the first).
pub(crate) fn attention_scratch_bytes(max_seq: usize, d: usize, isa: Isa) -> usize {
    // A thread's query rows range over 1..=max_seq; keys over 1..=max_seq.
    let mut most = 0;
    for m in 1..=max_seq {
        for l in [1, max_seq] {
            most = most
                .max(gemm::gemm_scratch_bytes(m, l, d, isa))
                .max(gemm::gemm_scratch_bytes(m, d, l, isa));
        }
    }
    most.next_multiple_of(64)
}

impl MiniLm {
    /// Attention of the `batch` requests in `inputs` (their masks say each
    /// sequence's length) over `team`.
    pub(crate) fn attention(
        &self,
        team: &dyn Team,
        batch: usize,
        inputs: &[f32],
        io: AttentionIo<'_>,
    ) -> Result<(), ModelError> {
        let (h, s) = (self.config.hidden_size, self.options.max_seq);
        let threads = team.threads();
        let per_thread = self.attention_scratch;
        if io.scores.len() < threads * s * s || io.bytes.len() < threads * per_thread {
            return Err(ModelError::Scratch {
                what: "attention floats or bytes",
                needed: threads * per_thread.max(s * s),
                got: io.scores.len().min(io.bytes.len()),
            });
        }
        let ctx = Shared(io.ctx.as_mut_ptr());
        let ctx_len = io.ctx.len();
        let scores = Shared(io.scores.as_mut_ptr());
        let bytes = Shared(io.bytes.as_mut_ptr());
        let failed: Mutex<Option<ModelError>> = Mutex::new(None);
        let job = |t: usize| {
            // SAFETY: thread `t` alone uses score matrix `t` and workspace
            // share `t`, both inside the buffers checked above.
            let (scores, bytes) = unsafe {
                (
                    core::slice::from_raw_parts_mut(scores.ptr().add(t * s * s), s * s),
                    core::slice::from_raw_parts_mut(bytes.ptr().add(t * per_thread), per_thread),
                )
            };
            let mut start = 0;
            for req in inputs.chunks_exact(2 * s).take(batch) {
                let mask = &req[s..];
                let len = seq_len(mask);
                let (r0, r1) = (t * len / threads, (t + 1) * len / threads);
                if r1 > r0 {
                    // SAFETY: rows `start + r0 .. start + r1` of the context
                    // are this thread's alone (module invariant) and inside
                    // it (`start + len <= tokens`).
                    let rows = unsafe {
                        debug_assert!((start + r1) * h <= ctx_len);
                        core::slice::from_raw_parts_mut(
                            ctx.ptr().add((start + r0) * h),
                            (r1 - r0) * h,
                        )
                    };
                    let qkv = &io.qkv[start * 3 * h..(start + len) * 3 * h];
                    let res = self.attend_rows(qkv, mask, len, r0, r1, rows, scores, bytes);
                    if let Err(e) = res {
                        *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
                start += len;
            }
        };
        team.run(&job);
        match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Query rows `r0..r1` of one sequence (`qkv`: its `len` rows), every
    /// head, into `ctx` (those rows, `hidden` wide).
    #[allow(clippy::too_many_arguments)]
    fn attend_rows(
        &self,
        qkv: &[f32],
        mask: &[f32],
        len: usize,
        r0: usize,
        r1: usize,
        ctx: &mut [f32],
        scores: &mut [f32],
        bytes: &mut [u8],
    ) -> Result<(), ModelError> {
        let cfg = &self.config;
        let (h, heads, d) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
        let isa = self.options.paths.f32;
        let scale = 1.0 / (d as f32).sqrt();
        let rows = r1 - r0;
        let mut keep_buf = [false; MAX_SEQ];
        let keep = keep_flags(&mask[..len], &mut keep_buf);
        let scores = &mut scores[..rows * len];
        for head in 0..heads {
            let q = MatRef::new(&qkv[r0 * 3 * h + head * d..], rows, d, 3 * h)?;
            let k = MatRef::new(&qkv[h + head * d..], len, d, 3 * h)?;
            let v = MatRef::new(&qkv[2 * h + head * d..], len, d, 3 * h)?;
            gemm::sgemm(
                isa,
                scale,
                q,
                BMatrix::Plain(k.t()),
                0.0,
                MatMut::new(scores, rows, len, len)?,
                &Epilogue::new(),
                bytes,
            )?;
            ops::softmax_rows(isa, scores, len, keep).map_err(op)?;
            gemm::sgemm(
                isa,
                1.0,
                MatRef::new(scores, rows, len, len)?,
                BMatrix::Plain(v),
                0.0,
                MatMut::new(&mut ctx[head * d..], rows, d, h)?,
                &Epilogue::new(),
                bytes,
            )?;
        }
        Ok(())
    }
}
