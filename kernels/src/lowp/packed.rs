//! Weights converted once at load and packed in the tile layout shared by
//! every low-precision path (AMX tiles, `VDPBF16PS`/`VPDPBUSD` rows, the
//! portable fallback), so a packed matrix never depends on the CPU.
//!
//! Layout of a `k x n` matrix: `panels = n.div_ceil(32) * 2` panels of 16
//! columns (an even count: the microkernels always read two), `K` padded
//! with zeros to `kp`, a multiple of the K step (32 bf16, 64 int8).
//! Panel `q` is `kp / G` rows of 64 bytes, where `G` is the group along K
//! (2 bf16, 4 int8): row `g` holds, for columns `j = 0..16`, the `G`
//! values `(g*G + i, q*16 + j)`, `i < G` (the "VNNI" layout AMX wants for
//! B). So a 16-row slice of a panel is one B tile, and the K slice at `pc`
//! starts `pc * 16` elements into the panel.
//!
//! Int8 adds per-column scales and code sums (for `VPDPBUSD`'s unsigned
//! A operand, see `lowp::kernel_avx512`), `panels * 16` entries each.

use super::Elem;
use crate::bf16::f32_to_bf16;
use crate::gemm::{GemmError, MatRef};
use crate::quant;

/// Alignment of the packed panels and side tables (a cache line).
pub const LOWP_ALIGN: usize = 64;

/// The geometry shared by the bf16 and int8 layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub elem: Elem,
    pub k: usize,
    pub n: usize,
    /// `k` rounded up to the K step; `kp % elem.k_step() == 0`.
    pub kp: usize,
    /// Even number of 16-column panels, `panels * 16 >= n`.
    pub panels: usize,
}

impl Layout {
    pub fn new(elem: Elem, k: usize, n: usize) -> Self {
        Self {
            elem,
            k,
            n,
            kp: k.next_multiple_of(elem.k_step()),
            panels: n.div_ceil(32) * 2,
        }
    }
    /// Bytes of one panel (`kp * 16` elements).
    pub fn panel_bytes(&self) -> usize {
        self.kp * 16 * self.elem.bytes()
    }
    fn panels_bytes(&self) -> usize {
        self.panels * self.panel_bytes()
    }
    /// Per-column tables (int8 only): scales then sums, each padded.
    fn tables_bytes(&self) -> usize {
        match self.elem {
            Elem::Bf16 => 0,
            Elem::Int8 => 2 * (self.panels * 16 * 4).next_multiple_of(LOWP_ALIGN),
        }
    }
    fn total_bytes(&self) -> usize {
        self.panels_bytes().next_multiple_of(LOWP_ALIGN) + self.tables_bytes()
    }
    /// Offset of `(p, j)`'s element in the panels, in elements.
    fn index(&self, p: usize, j: usize) -> usize {
        let g = self.elem.group();
        (j / 16) * self.kp * 16 + (p / g) * 16 * g + (j % 16) * g + p % g
    }
}

/// Packed low-precision weights (`k x n`, used as B).
///
/// Invariant: `bytes` is [`LOWP_ALIGN`]-aligned and holds the layout's
/// panels (padding zeroed) followed, for int8, by `panels * 16` f32
/// scales and `panels * 16` i32 code sums (padding columns: scale 0, sum 0).
#[derive(Debug)]
pub struct PackedLowp<'m> {
    storage: Storage<'m>,
    layout: Layout,
}

#[derive(Debug)]
enum Storage<'m> {
    Borrowed(&'m [u8]),
    Owned { buf: Vec<u8>, offset: usize },
}

/// bf16 weights: fp32 rounded to nearest even (NaN kept), tile layout.
pub type PackedBf16<'m> = PackedLowp<'m>;
/// int8 weights: symmetric per output column (`w[p, j] ~= scale[j] * q`).
pub type PackedInt8<'m> = PackedLowp<'m>;

impl<'m> PackedLowp<'m> {
    /// Bytes of caller memory [`Self::pack_into`] needs for `elem`
    /// (with the slack to align any buffer).
    pub fn bytes_needed(elem: Elem, k: usize, n: usize) -> usize {
        Layout::new(elem, k, n).total_bytes() + LOWP_ALIGN
    }

    /// Converts and packs a `k x n` view (e.g. `MatRef::new(w, n, k, k)?.t()`
    /// for weights stored `[out][in]`) into caller memory.
    pub fn pack_into(b: MatRef<'_>, elem: Elem, mem: &'m mut [u8]) -> Result<Self, GemmError> {
        let layout = Layout::new(elem, b.rows(), b.cols());
        let total = layout.total_bytes();
        let offset = mem.as_ptr().align_offset(LOWP_ALIGN);
        if offset.saturating_add(total) > mem.len() {
            return Err(GemmError::BufferTooSmall {
                what: "packed low-precision weights",
                needed: total + LOWP_ALIGN,
                got: mem.len(),
            });
        }
        let bytes = &mut mem[offset..offset + total];
        fill(b, &layout, bytes);
        Ok(Self {
            storage: Storage::Borrowed(bytes),
            layout,
        })
    }

    /// As [`Self::pack_into`], in memory of its own.
    pub fn new(b: MatRef<'_>, elem: Elem) -> PackedLowp<'static> {
        let layout = Layout::new(elem, b.rows(), b.cols());
        let total = layout.total_bytes();
        let mut buf = vec![0u8; total + LOWP_ALIGN];
        let offset = buf.as_ptr().align_offset(LOWP_ALIGN);
        fill(b, &layout, &mut buf[offset..offset + total]);
        PackedLowp {
            storage: Storage::Owned { buf, offset },
            layout,
        }
    }

    /// Row-major `k x n` weights with row stride `ldb`.
    pub fn from_row_major(
        b: &[f32],
        ldb: usize,
        k: usize,
        n: usize,
        elem: Elem,
    ) -> Result<PackedLowp<'static>, GemmError> {
        Ok(PackedLowp::new(MatRef::new(b, k, n, ldb)?, elem))
    }

    pub fn elem(&self) -> Elem {
        self.layout.elem
    }
    pub fn k(&self) -> usize {
        self.layout.k
    }
    pub fn n(&self) -> usize {
        self.layout.n
    }
    /// Bytes of weights read per full pass (what memory-bound calls pay).
    pub fn weight_bytes(&self) -> usize {
        self.layout.panels_bytes()
    }
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Borrowed(b) => b,
            Storage::Owned { buf, offset } => &buf[*offset..*offset + self.layout.total_bytes()],
        }
    }
    pub(crate) fn panels_ptr(&self) -> *const u8 {
        self.bytes().as_ptr()
    }
    /// Int8 per-column scales (`panels * 16`), null for bf16.
    pub(crate) fn col_scales_ptr(&self) -> *const f32 {
        match self.layout.elem {
            Elem::Bf16 => core::ptr::null(),
            Elem::Int8 => self.bytes()[self.scales_offset()..].as_ptr().cast(),
        }
    }
    /// Int8 per-column code sums (`panels * 16`), null for bf16.
    pub(crate) fn col_sums_ptr(&self) -> *const i32 {
        match self.layout.elem {
            Elem::Bf16 => core::ptr::null(),
            Elem::Int8 => self.bytes()[self.sums_offset()..].as_ptr().cast(),
        }
    }
    fn scales_offset(&self) -> usize {
        self.layout.panels_bytes().next_multiple_of(LOWP_ALIGN)
    }
    fn sums_offset(&self) -> usize {
        self.scales_offset() + (self.layout.panels * 16 * 4).next_multiple_of(LOWP_ALIGN)
    }

    /// Column `j`'s scale (int8), for tests and reports.
    pub fn col_scale(&self, j: usize) -> Option<f32> {
        (self.layout.elem == Elem::Int8 && j < self.layout.n).then(|| {
            let o = self.scales_offset() + 4 * j;
            f32::from_le_bytes(self.bytes()[o..o + 4].try_into().expect("4 bytes"))
        })
    }

    /// Element `(p, j)` widened back to f32 (dequantised for int8).
    pub fn get(&self, p: usize, j: usize) -> Option<f32> {
        let l = &self.layout;
        if p >= l.k || j >= l.n {
            return None;
        }
        let i = l.index(p, j);
        let b = self.bytes();
        Some(match l.elem {
            Elem::Bf16 => crate::bf16::bf16_to_f32(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])),
            Elem::Int8 => quant::dequantize(b[i] as i8, self.col_scale(j)?),
        })
    }
}

/// Writes the layout into zeroed or dirty `bytes` (every byte is written).
fn fill(b: MatRef<'_>, l: &Layout, bytes: &mut [u8]) {
    bytes.fill(0);
    let (ptr, rs, cs) = b.raw();
    // SAFETY: `MatRef` guarantees `(p, j)` in bounds for `p < k`, `j < n`.
    let at = |p: usize, j: usize| unsafe { *ptr.add(p * rs + j * cs) };
    match l.elem {
        Elem::Bf16 => {
            for p in 0..l.k {
                for j in 0..l.n {
                    let i = l.index(p, j);
                    bytes[2 * i..2 * i + 2].copy_from_slice(&f32_to_bf16(at(p, j)).to_le_bytes());
                }
            }
        }
        Elem::Int8 => {
            let panels = l.panels_bytes().next_multiple_of(LOWP_ALIGN);
            let width = (l.panels * 16 * 4).next_multiple_of(LOWP_ALIGN);
            let (codes, tables) = bytes.split_at_mut(panels);
            let (scales, sums) = tables.split_at_mut(width);
            for j in 0..l.n {
                let scale = quant::scale_for(quant::max_abs((0..l.k).map(|p| at(p, j))));
                let inv = 1.0 / scale;
                let mut sum = 0i32;
                for p in 0..l.k {
                    let q = quant::quantize(at(p, j), inv);
                    sum += i32::from(q);
                    codes[l.index(p, j)] = q as u8;
                }
                scales[4 * j..4 * j + 4].copy_from_slice(&scale.to_le_bytes());
                sums[4 * j..4 * j + 4].copy_from_slice(&sum.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_groups_pairs_and_quads_along_k() {
        let l = Layout::new(Elem::Bf16, 5, 3);
        assert_eq!((l.kp, l.panels), (32, 2));
        assert_eq!(l.index(0, 0), 0);
        assert_eq!(l.index(1, 0), 1);
        assert_eq!(l.index(0, 1), 2);
        assert_eq!(l.index(2, 0), 32);
        let l = Layout::new(Elem::Int8, 70, 17);
        assert_eq!((l.kp, l.panels), (128, 2));
        assert_eq!(l.index(3, 0), 3);
        assert_eq!(l.index(4, 0), 64);
        assert_eq!(l.index(0, 16), 128 * 16);
    }

    #[test]
    fn packed_values_read_back() {
        let (k, n) = (37, 19);
        let w: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect();
        let view = MatRef::new(&w, k, n, n).expect("view");
        let b = PackedLowp::new(view, Elem::Bf16);
        let q = PackedLowp::new(view, Elem::Int8);
        for p in 0..k {
            for j in 0..n {
                let x = w[p * n + j];
                assert_eq!(b.get(p, j), Some(crate::bf16::bf16_to_f32(f32_to_bf16(x))));
                let s = q.col_scale(j).expect("scale");
                assert!((q.get(p, j).expect("in range") - x).abs() <= s * 0.5 * 1.0001);
            }
        }
        assert_eq!(b.get(k, 0), None);
        let mut small = vec![0u8; 10];
        assert!(matches!(
            PackedLowp::pack_into(view, Elem::Bf16, &mut small),
            Err(GemmError::BufferTooSmall { .. })
        ));
        let mut mem = vec![0xFFu8; PackedLowp::bytes_needed(Elem::Int8, k, n)];
        let borrowed = PackedLowp::pack_into(view, Elem::Int8, &mut mem).expect("fits");
        assert_eq!(borrowed.bytes(), q.bytes());
    }
}
