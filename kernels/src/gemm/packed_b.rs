//! B packed once, at model load, in the microkernel's panel layout.
//!
//! Layout: `n.div_ceil(NR)` panels, panel `q` holding columns
//! `q*NR .. q*NR + NR` for all of K as `[p][j]` (`K * NR` floats, zero
//! padded past column `n`), panels back to back. The driver can then take
//! any KC slice of any panel at `base + q*K*NR + pc*NR` without repacking,
//! and the matrix-vector path reads each panel front to back.

use super::pack::{pack_b, Strided};
use super::{GemmError, MatRef};
use crate::isa::Isa;

/// Alignment of packed panels: one cache line, and one zmm load.
pub const PANEL_ALIGN: usize = 64;

/// Pre-packed B (`k x n`), for one ISA's `NR`.
///
/// Invariant: `data.len() == k * n.div_ceil(nr) * nr` and
/// `data.as_ptr()` is [`PANEL_ALIGN`]-aligned.
#[derive(Debug)]
pub struct PackedB<'m> {
    storage: Storage<'m>,
    k: usize,
    n: usize,
    nr: usize,
    isa: Isa,
    cold: bool,
}

#[derive(Debug)]
enum Storage<'m> {
    Borrowed(&'m [f32]),
    Owned { buf: Vec<f32>, offset: usize },
}

impl<'m> PackedB<'m> {
    fn floats(k: usize, n: usize, isa: Isa) -> usize {
        let (_, nr) = super::Blocking::tile(isa);
        k * n.div_ceil(nr) * nr
    }

    /// Bytes of caller memory [`Self::pack_into`] needs (including the
    /// slack to align an arbitrary buffer to [`PANEL_ALIGN`]).
    pub fn bytes_needed(k: usize, n: usize, isa: Isa) -> usize {
        Self::floats(k, n, isa) * 4 + PANEL_ALIGN
    }

    /// Packs row-major `b` (`k x n`, row stride `ldb`) into `mem`.
    pub fn pack_into(
        b: &[f32],
        ldb: usize,
        k: usize,
        n: usize,
        isa: Isa,
        mem: &'m mut [u8],
    ) -> Result<Self, GemmError> {
        Self::pack_view_into(MatRef::new(b, k, n, ldb)?, isa, mem)
    }

    /// Packs any `k x n` view (e.g. `MatRef::new(w, n, k, k)?.t()` for
    /// weights stored `[out][in]`) into `mem`.
    pub fn pack_view_into(b: MatRef<'_>, isa: Isa, mem: &'m mut [u8]) -> Result<Self, GemmError> {
        isa.require()?;
        let (k, n) = (b.rows(), b.cols());
        let floats = Self::floats(k, n, isa);
        let offset = mem.as_ptr().align_offset(PANEL_ALIGN);
        if offset + floats * 4 > mem.len() {
            return Err(GemmError::BufferTooSmall {
                what: "PackedB memory",
                needed: Self::bytes_needed(k, n, isa),
                got: mem.len(),
            });
        }
        let bytes = &mut mem[offset..offset + floats * 4];
        // SAFETY: every bit pattern is a valid f32; `bytes` starts
        // PANEL_ALIGN-aligned, so the prefix is empty and `data` covers it all.
        let (prefix, data, _) = unsafe { bytes.align_to_mut::<f32>() };
        debug_assert!(prefix.is_empty() && data.len() == floats);
        fill(b, isa, data);
        Ok(Self {
            storage: Storage::Borrowed(data),
            k,
            n,
            nr: super::Blocking::tile(isa).1,
            isa,
            cold: false,
        })
    }

    /// Packs into memory of its own (convenience; the runtime should use
    /// [`Self::pack_into`] with node-local memory).
    pub fn new(
        b: &[f32],
        ldb: usize,
        k: usize,
        n: usize,
        isa: Isa,
    ) -> Result<PackedB<'static>, GemmError> {
        PackedB::from_view(MatRef::new(b, k, n, ldb)?, isa)
    }

    /// As [`Self::new`], from any view.
    pub fn from_view(b: MatRef<'_>, isa: Isa) -> Result<PackedB<'static>, GemmError> {
        isa.require()?;
        let (k, n) = (b.rows(), b.cols());
        let floats = Self::floats(k, n, isa);
        let mut buf = vec![0.0f32; floats + PANEL_ALIGN / 4];
        let offset = buf.as_ptr().align_offset(PANEL_ALIGN);
        fill(b, isa, &mut buf[offset..offset + floats]);
        Ok(PackedB {
            storage: Storage::Owned { buf, offset },
            k,
            n,
            nr: super::Blocking::tile(isa).1,
            isa,
            cold: false,
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }
    pub fn n(&self) -> usize {
        self.n
    }
    /// The ISA whose kernels can read this layout.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Panel width (the kernel's NR).
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// Says whether calls will find these panels in memory (or L3) rather
    /// than in L2. A cold B makes every call prefetch each next slice of B
    /// into L2 while the current one is in use, whatever B's size; without
    /// the hint only a B larger than `4 x L2` gets this (a smaller one is
    /// taken to be warm from the previous call, where the prefetches would
    /// only hold the fill buffers the loads need). Model loaders set it when
    /// the weights of all layers together outgrow L2, since each layer's
    /// then evict the others': MiniLM's 1536 x 384 layers ran 3.5% faster
    /// with it (`runtime/src/models/store.rs`).
    pub fn set_cold(&mut self, cold: bool) {
        self.cold = cold;
    }

    /// See [`Self::set_cold`].
    pub fn is_cold(&self) -> bool {
        self.cold
    }

    /// The packed panels (`k * n.div_ceil(nr) * nr` floats).
    pub fn panels(&self) -> &[f32] {
        match &self.storage {
            Storage::Borrowed(d) => d,
            Storage::Owned { buf, offset } => {
                &buf[*offset..*offset + Self::floats(self.k, self.n, self.isa)]
            }
        }
    }
}

fn fill(b: MatRef<'_>, isa: Isa, data: &mut [f32]) {
    let (_, nr) = super::Blocking::tile(isa);
    let (k, n) = (b.rows(), b.cols());
    if k == 0 || n == 0 {
        return;
    }
    let (ptr, rs, cs) = b.raw();
    // SAFETY: `MatRef` guarantees `(p, j)` is in bounds for `p < k`,
    // `j < n`; `data` holds `n.div_ceil(nr)` panels of `k * nr` floats.
    unsafe {
        pack_b(
            Strided { ptr, rs, cs },
            k,
            n,
            nr,
            data.as_mut_ptr(),
            k * nr,
            0,
        );
    }
}
