//! Row-wise softmax with an optional keep-mask.

use super::{dispatch, max, rows_of, OpsError, WithSimd};
use crate::isa::Isa;
use crate::simd::{self, Simd};

/// Softmax of each row of `x` (`rows x cols`), in place, numerically
/// stable (`e^(x - max)`).
///
/// `keep`, when given, is either one flag per column (the same for every
/// row, e.g. a padding mask over keys) or one per element; masked
/// positions get probability 0 and a fully masked row becomes all zeros
/// (not NaN).
pub fn softmax_rows(
    isa: Isa,
    x: &mut [f32],
    cols: usize,
    keep: Option<&[bool]>,
) -> Result<(), OpsError> {
    rows_of("softmax input", x.len(), cols)?;
    if let Some(k) = keep {
        if k.len() != cols && k.len() != x.len() {
            return Err(OpsError::Shape {
                what: "softmax mask",
                detail: format!(
                    "length {}, expected {cols} (per column) or {} (per element)",
                    k.len(),
                    x.len()
                ),
            });
        }
    }
    dispatch(isa, Softmax { x, cols, keep })
}

struct Softmax<'a> {
    x: &'a mut [f32],
    cols: usize,
    keep: Option<&'a [bool]>,
}

impl WithSimd for Softmax<'_> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        let cols = self.cols;
        for (r, row) in self.x.chunks_exact_mut(cols).enumerate() {
            let keep = self.keep.map(|k| {
                if k.len() == cols {
                    k
                } else {
                    &k[r * cols..(r + 1) * cols]
                }
            });
            if let Some(k) = keep {
                let mut any = false;
                for (v, &kept) in row.iter_mut().zip(k) {
                    if !kept {
                        *v = f32::NEG_INFINITY;
                    }
                    any |= kept;
                }
                if !any {
                    row.fill(0.0);
                    continue;
                }
            }
            let m = s.splat(max(s, row));
            super::map_inplace(s, row, |v| simd::exp(s, s.sub(v, m)));
            if let Some(k) = keep {
                // exp clamps its input at -87, so masked lanes hold ~1e-38: make them 0.
                for (v, &kept) in row.iter_mut().zip(k) {
                    if !kept {
                        *v = 0.0;
                    }
                }
            }
            let sum = super::sum_map(s, row, |v| v);
            let inv = s.splat(1.0 / sum);
            super::map_inplace(s, row, |v| s.mul(v, inv));
        }
    }
}
