//! MiniLM's self-attention, `softmax(Q K^T / sqrt d) V` per sequence and
//! head, on strided views of the fused QKV rows, with the query rows of
//! every sequence split over the request's team.
//!
//! Thread `t` of `T` owns query rows `[t len / T, (t + 1) len / T)` of
//! each sequence: it writes only those rows of the context and its own
//! work buffer (`w = attention_floats(max_seq, d)` floats at `t w`), and
//! reads Q, K, V. Each head runs the fused [`ops::attention_head`], or,
//! when the weight GEMMs run on AMX in bf16, the same head
//! with its products on AMX tiles ([`ops::attention_head_amx`]: 12 us
//! instead of 22 us for a 128-token head of 32 on one core).

use std::sync::Mutex;

use pinned_kernels::gemm::Team;
use pinned_kernels::isa::AmxBf16;
use pinned_kernels::lowp::LowpPath;
use pinned_kernels::ops;
use pinned_kernels::precision::Precision;

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
    /// `threads x attention_floats(max_seq, d)`.
    pub work: &'a mut [f32],
}

/// Work floats one thread's attention needs for sequences of up to
/// `max_seq` tokens and heads of `d`.
pub(crate) fn attention_floats(max_seq: usize, d: usize) -> usize {
    ops::attention_work_floats(max_seq, max_seq, d)
        .max(ops::attention_amx_work_floats(max_seq, max_seq, d))
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
        let per_thread = attention_floats(s, self.config.head_dim());
        if io.work.len() < threads * per_thread {
            return Err(ModelError::Scratch {
                what: "attention floats",
                needed: threads * per_thread,
                got: io.work.len(),
            });
        }
        let ctx = Shared(io.ctx.as_mut_ptr());
        let ctx_len = io.ctx.len();
        let work = Shared(io.work.as_mut_ptr());
        let failed: Mutex<Option<ModelError>> = Mutex::new(None);
        let job = |t: usize| {
            // SAFETY: thread `t` alone uses work share `t`, inside the
            // buffer checked above.
            let work = unsafe {
                core::slice::from_raw_parts_mut(work.ptr().add(t * per_thread), per_thread)
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
                    let res = self.attend_rows(qkv, mask, len, r0..r1, rows, work);
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

    /// Query rows `rows` of one sequence (`qkv`: its `len` rows), every
    /// head, into `ctx` (those rows, `hidden` wide).
    fn attend_rows(
        &self,
        qkv: &[f32],
        mask: &[f32],
        len: usize,
        rows: std::ops::Range<usize>,
        ctx: &mut [f32],
        work: &mut [f32],
    ) -> Result<(), ModelError> {
        let cfg = &self.config;
        let (h, heads, d) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
        let isa = self.options.paths.f32;
        let paths = &self.options.paths;
        // bf16 weights on AMX: the heads' products go there too, their
        // error that of the weights' bf16 (fixture cosine 0.9999846 ->
        // 0.9999841). int8 keeps fp32 heads: bf16 ones took its cosine
        // from 0.9928 to 0.9909, close to its 0.99 bound.
        let amx = match self.options.precision {
            Precision::Bf16 if paths.bf16 == LowpPath::Amx => AmxBf16::try_new(),
            _ => None,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let mut keep_buf = [false; MAX_SEQ];
        let keep = keep_flags(&mask[..len], &mut keep_buf);
        let shape = ops::HeadShape {
            rows: rows.len(),
            len,
            d,
            ld: 3 * h,
            ldo: h,
        };
        let q = &qkv[rows.start * 3 * h..];
        for head in 0..heads {
            let at = head * d;
            let (q, k, v) = (&q[at..], &qkv[h + at..], &qkv[2 * h + at..]);
            let out = &mut ctx[at..];
            match amx {
                Some(t) => ops::attention_head_amx(t, shape, scale, q, k, v, keep, work, out),
                None => ops::attention_head(isa, shape, scale, q, k, v, keep, work, out),
            }
            .map_err(op)?;
        }
        Ok(())
    }
}
