//! Packing A and B into the microkernel's panel layouts.
//!
//! A: each register tile of `h` rows (see [`row_tiles`]) becomes a panel
//! laid out `[p][r]` (`kc * h` floats), panels back to back.
//! B: each `NR`-column strip becomes a panel laid out `[p][j]`
//! (`kc * NR` floats), zero-padded past the last column, so the kernel
//! always loads whole vectors of B and masks only C.

/// A read-only strided view: element `(i, j)` at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: a read-only view of a slice borrowed for the call.
unsafe impl Send for Strided {}
// SAFETY: as above.
unsafe impl Sync for Strided {}

impl Strided {
    /// The view starting at `(i, j)`; address arithmetic only.
    pub fn at(self, i: usize, j: usize) -> Self {
        Self {
            ptr: self.ptr.wrapping_add(i * self.rs + j * self.cs),
            ..self
        }
    }
}

/// Splits `rows` into register tiles of at most `mr` rows, as even as
/// possible (16 rows with MR = 14 become 8 + 8, not 14 + 2): a short tile
/// has too few independent accumulators to hide FMA latency.
/// Yields `(first_row, height)`.
pub(crate) fn row_tiles(rows: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = rows.div_ceil(mr);
    let base = rows.checked_div(tiles).unwrap_or(0);
    let extra = rows.checked_rem(tiles).unwrap_or(0);
    (0..tiles).map(move |t| {
        let start = t * base + t.min(extra);
        (start, base + usize::from(t < extra))
    })
}

/// Packs the `rows x kc` block of `a` into `dst` as row-tile panels.
///
/// # Safety
/// `a` must be readable at `(i, p)` for `i < rows`, `p < kc`; `dst` must
/// be writable for `rows * kc` floats and not overlap `a`.
pub(crate) unsafe fn pack_a(a: Strided, rows: usize, kc: usize, mr: usize, dst: *mut f32) {
    let mut out = dst;
    for (start, h) in row_tiles(rows, mr) {
        // SAFETY: `start + r < rows`, `p < kc`, and `out` advances by
        // `h * kc` per tile, `rows * kc` in all (contract above).
        unsafe {
            // Walk K outside, rows inside: `h` sequential read streams and
            // one sequential write stream.
            for p in 0..kc {
                for r in 0..h {
                    *out.add(p * h + r) = *a.ptr.add((start + r) * a.rs + p * a.cs);
                }
            }
            out = out.add(h * kc);
        }
    }
}

/// Packs the `kc x cols` block of `b` into `cols.div_ceil(nr)` panels of
/// `kc * nr` floats starting at `dst`, each `panel_stride` floats apart,
/// starting `k_offset * nr` floats into each panel.
///
/// # Safety
/// `b` must be readable at `(p, j)` for `p < kc`, `j < cols`; `dst` must be
/// writable over every panel's `[k_offset * nr, (k_offset + kc) * nr)`
/// range, and not overlap `b`.
pub(crate) unsafe fn pack_b(
    b: Strided,
    kc: usize,
    cols: usize,
    nr: usize,
    dst: *mut f32,
    panel_stride: usize,
    k_offset: usize,
) {
    for (panel, j0) in (0..cols).step_by(nr).enumerate() {
        let w = nr.min(cols - j0);
        // SAFETY: panel `panel < cols.div_ceil(nr)` and row `p < kc` stay in
        // the ranges of the contract; `j0 + j < cols`.
        unsafe {
            let base = dst.add(panel * panel_stride + k_offset * nr);
            for p in 0..kc {
                let row = base.add(p * nr);
                if b.cs == 1 {
                    core::ptr::copy_nonoverlapping(b.ptr.add(p * b.rs + j0), row, w);
                } else {
                    for j in 0..w {
                        *row.add(j) = *b.ptr.add(p * b.rs + (j0 + j) * b.cs);
                    }
                }
                for j in w..nr {
                    *row.add(j) = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_tiles_cover_evenly() {
        for mr in [1, 4, 6, 14] {
            for rows in 0..100 {
                let tiles: Vec<_> = row_tiles(rows, mr).collect();
                let mut next = 0;
                for &(s, h) in &tiles {
                    assert_eq!(s, next);
                    assert!(h >= 1 && h <= mr);
                    next += h;
                }
                assert_eq!(next, rows);
                if let (Some(min), Some(max)) = (
                    tiles.iter().map(|t| t.1).min(),
                    tiles.iter().map(|t| t.1).max(),
                ) {
                    assert!(max - min <= 1, "{rows} {mr} {tiles:?}");
                }
            }
        }
        assert_eq!(row_tiles(16, 14).collect::<Vec<_>>(), [(0, 8), (8, 8)]);
    }

    #[test]
    fn pack_a_layout() {
        // 3 x 2 row-major, one tile of 3 rows: [p][r].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = [0.0f32; 6];
        let v = Strided {
            ptr: a.as_ptr(),
            rs: 2,
            cs: 1,
        };
        // SAFETY: 3 x 2 view of a 6-element array; dst holds 6.
        unsafe { pack_a(v, 3, 2, 4, dst.as_mut_ptr()) };
        assert_eq!(dst, [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        // The same matrix stored transposed gives the same panel.
        let at = [1.0, 3.0, 5.0, 2.0, 4.0, 6.0];
        let vt = Strided {
            ptr: at.as_ptr(),
            rs: 1,
            cs: 3,
        };
        let mut dst2 = [0.0f32; 6];
        // SAFETY: as above.
        unsafe { pack_a(vt, 3, 2, 4, dst2.as_mut_ptr()) };
        assert_eq!(dst, dst2);
    }

    #[test]
    fn pack_b_pads_with_zeros() {
        // 2 x 3, NR = 2: panels [[1,2],[4,5]] and [[3,0],[6,0]].
        let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = [f32::NAN; 8];
        let v = Strided {
            ptr: b.as_ptr(),
            rs: 3,
            cs: 1,
        };
        // SAFETY: 2 x 3 view; dst holds 2 panels of 2 x 2.
        unsafe { pack_b(v, 2, 3, 2, dst.as_mut_ptr(), 4, 0) };
        assert_eq!(dst, [1.0, 2.0, 4.0, 5.0, 3.0, 0.0, 6.0, 0.0]);
    }
}
