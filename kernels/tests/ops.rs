//! Model ops on every ISA this machine has, against f64 references, on
//! widths around every vector length (tails) and with masks.
//!
//! Tolerances: an n-term f32 sum is within `n * eps * sum |terms|` of
//! exact; GELU adds an absolute `2e-6 * (1 + |x|)` (erf approximation);
//! exp adds ~2 ulp relative.

use pinned_kernels::bf16::{bf16_to_f32, f32_to_bf16};
use pinned_kernels::ops::{self, HeadShape, OpsError};
use pinned_kernels::Isa;

mod common;
use common::erf64;

const EPS: f64 = f32::EPSILON as f64;
const WIDTHS: [usize; 8] = [1, 3, 8, 15, 16, 17, 33, 100];

/// Deterministic values in `offset +- scale`.
fn fill(len: usize, seed: u64, scale: f32, offset: f32) -> Vec<f32> {
    let mut v = common::uniform(len, seed);
    v.iter_mut().for_each(|x| *x = *x * scale + offset);
    v
}

fn close(got: f32, want: f64, tol: f64, what: &str) {
    assert!(
        (got as f64 - want).abs() <= tol,
        "{what}: got {got}, want {want}, tol {tol:e}"
    );
}

#[test]
fn layernorm_matches_reference() {
    for isa in Isa::available() {
        for cols in WIDTHS {
            // A large offset checks the variance has no cancellation.
            for offset in [0.0f32, 1000.0] {
                let rows = 3;
                let x0 = fill(rows * cols, cols as u64, 2.0, offset);
                let gamma = fill(cols, 7, 1.0, 1.0);
                let beta = fill(cols, 8, 1.0, 0.0);
                let mut x = x0.clone();
                ops::layernorm(isa, &mut x, cols, &gamma, &beta, 1e-5).unwrap();
                for r in 0..rows {
                    let row = &x0[r * cols..(r + 1) * cols];
                    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
                    let var =
                        row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
                    let rstd = 1.0 / (var + 1e-5).sqrt();
                    for j in 0..cols {
                        let z = (row[j] as f64 - mean) * rstd;
                        let want = z * gamma[j] as f64 + beta[j] as f64;
                        // Relative error of (x - mean) grows with |mean| / std.
                        let cond = 1.0 + mean.abs() * rstd;
                        let tol = (cols as f64 + 8.0)
                            * EPS
                            * cond
                            * (gamma[j].abs() as f64 * (z.abs() + 1.0))
                            + 4.0 * EPS * want.abs();
                        close(
                            x[r * cols + j],
                            want,
                            tol,
                            &format!("{isa} layernorm cols={cols} ({r},{j})"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn softmax_matches_reference_with_and_without_mask() {
    for isa in Isa::available() {
        for cols in WIDTHS {
            let rows = 4;
            let x0 = fill(rows * cols, 3 + cols as u64, 20.0, 0.0);
            let per_col: Vec<bool> = (0..cols).map(|j| j % 3 != 1).collect();
            let per_elem: Vec<bool> = (0..rows * cols).map(|i| i % 5 != 2).collect();
            let none = vec![false; cols];
            for keep in [
                None,
                Some(&per_col[..]),
                Some(&per_elem[..]),
                Some(&none[..]),
            ] {
                let mut x = x0.clone();
                ops::softmax_rows(isa, &mut x, cols, keep).unwrap();
                for r in 0..rows {
                    let kept = |j: usize| match keep {
                        None => true,
                        Some(k) if k.len() == cols => k[j],
                        Some(k) => k[r * cols + j],
                    };
                    let row = &x0[r * cols..(r + 1) * cols];
                    let m = (0..cols)
                        .filter(|&j| kept(j))
                        .map(|j| row[j] as f64)
                        .fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..cols)
                        .filter(|&j| kept(j))
                        .map(|j| (row[j] as f64 - m).exp())
                        .sum();
                    for j in 0..cols {
                        let want = if kept(j) {
                            (row[j] as f64 - m).exp() / sum
                        } else {
                            0.0
                        };
                        let tol = (cols as f64 + 16.0) * EPS * want + 1e-30;
                        let got = x[r * cols + j];
                        assert!(got.is_finite(), "{isa} softmax NaN");
                        close(
                            got,
                            want,
                            tol,
                            &format!("{isa} softmax cols={cols} ({r},{j})"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gelu_add_l2_and_mean_pool() {
    for isa in Isa::available() {
        for len in WIDTHS {
            let x0 = fill(len, 11 + len as u64, 6.0, 0.0);
            let mut x = x0.clone();
            ops::gelu(isa, &mut x).unwrap();
            for (g, &v) in x.iter().zip(&x0) {
                let v = v as f64;
                let want = 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2));
                close(*g, want, 2e-6 * (1.0 + v.abs()), &format!("{isa} gelu"));
            }
            let mut x = x0.clone();
            ops::gelu_tanh(isa, &mut x).unwrap();
            for (g, &v) in x.iter().zip(&x0) {
                let v = v as f64;
                let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v);
                close(
                    *g,
                    0.5 * v * (1.0 + u.tanh()),
                    2e-6 * (1.0 + v.abs()),
                    &format!("{isa} gelu_tanh"),
                );
            }
            let y = fill(len, 99, 1.0, 0.0);
            let mut x = x0.clone();
            ops::add(isa, &mut x, &y).unwrap();
            for i in 0..len {
                assert_eq!(x[i], x0[i] + y[i], "{isa} add");
            }
        }
        for cols in WIDTHS {
            let rows = 5;
            let x0 = fill(rows * cols, 5 * cols as u64, 3.0, 0.0);
            let mut x = x0.clone();
            ops::l2_normalize(isa, &mut x, cols, 1e-12).unwrap();
            for r in 0..rows {
                let row = &x0[r * cols..(r + 1) * cols];
                let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                for j in 0..cols {
                    let want = row[j] as f64 / norm;
                    close(
                        x[r * cols + j],
                        want,
                        (cols as f64 + 4.0) * EPS,
                        &format!("{isa} l2 cols={cols}"),
                    );
                }
            }
            let keep: Vec<bool> = (0..rows).map(|r| r != 1).collect();
            for mask in [None, Some(&keep[..])] {
                let mut out = vec![f32::NAN; cols];
                ops::mean_pool(isa, &x0, cols, mask, &mut out).unwrap();
                let kept: Vec<usize> = (0..rows).filter(|&r| mask.is_none_or(|k| k[r])).collect();
                for j in 0..cols {
                    let vals = kept.iter().map(|&r| x0[r * cols + j] as f64);
                    let abs: f64 = vals.clone().map(f64::abs).sum();
                    let want = vals.sum::<f64>() / kept.len() as f64;
                    close(
                        out[j],
                        want,
                        (rows as f64 + 2.0) * EPS * abs,
                        &format!("{isa} mean_pool"),
                    );
                }
            }
            let mut out = vec![1.0f32; cols];
            ops::mean_pool(isa, &x0, cols, Some(&[false; 5]), &mut out).unwrap();
            assert!(out.iter().all(|&v| v == 0.0), "no kept rows gives zeros");
        }
    }
}

#[test]
fn ops_reject_bad_shapes_and_write_nothing() {
    let isa = Isa::best();
    let mut x = vec![1.0f32; 10];
    let err = ops::layernorm(isa, &mut x, 3, &[1.0; 3], &[0.0; 3], 1e-5);
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    let err = ops::layernorm(isa, &mut x, 5, &[1.0; 4], &[0.0; 5], 1e-5);
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    let err = ops::softmax_rows(isa, &mut x, 5, Some(&[true; 3]));
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    let err = ops::add(isa, &mut x, &[1.0; 9]);
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    let mut out = vec![0.0f32; 4];
    let err = ops::mean_pool(isa, &x, 5, None, &mut out);
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    let err = ops::l2_normalize(isa, &mut x, 0, 1e-12);
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    assert!(x.iter().all(|&v| v == 1.0));
}

/// The heads both attention tests run: single elements, widths and key
/// counts around every vector length (tails), a prime width.
const HEAD_DIMS: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (5, 3, 4),
    (7, 17, 8),
    (13, 70, 17),
    (6, 64, 32),
    (20, 33, 33),
];

/// One attention head's operands: Q, K and V interleaved in the rows of
/// one fused buffer (`ld = 3d + 5`, Q at column 0, K at `d`, V at `2d`),
/// the output rows `ldo = d + 3` apart, every third key masked when
/// `masked`, `scale = 1 / sqrt(d)`.
struct HeadCase {
    shape: HeadShape,
    scale: f32,
    qkv: Vec<f32>,
    keep: Vec<bool>,
    masked: bool,
}

fn head_case(rows: usize, len: usize, d: usize, masked: bool) -> HeadCase {
    let ld = 3 * d + 5;
    HeadCase {
        shape: HeadShape {
            rows,
            len,
            d,
            ld,
            ldo: d + 3,
        },
        scale: 1.0 / (d as f32).sqrt(),
        qkv: fill(len.max(rows) * ld, (rows * len + d) as u64, 1.0, 0.0),
        keep: (0..len).map(|j| !masked || j % 3 != 1).collect(),
        masked,
    }
}

impl HeadCase {
    fn q(&self) -> &[f32] {
        &self.qkv
    }
    fn k(&self) -> &[f32] {
        &self.qkv[self.shape.d..]
    }
    fn v(&self) -> &[f32] {
        &self.qkv[2 * self.shape.d..]
    }
    fn mask(&self) -> Option<&[bool]> {
        self.masked.then_some(&self.keep[..])
    }
    /// The output buffer, 7 everywhere (a head writes only its columns).
    fn out(&self) -> Vec<f32> {
        let HeadShape { rows, d, ldo, .. } = self.shape;
        vec![7.0; (rows - 1) * ldo + d]
    }
    /// `scale * (q_r . k_j)` in f64, of the terms' magnitudes if `abs`.
    fn score(&self, r: usize, j: usize, abs: bool) -> f64 {
        let HeadShape { d, ld, .. } = self.shape;
        let (q, k) = (self.q(), self.k());
        let terms = (0..d).map(|p| q[r * ld + p] as f64 * k[j * ld + p] as f64);
        let sum: f64 = if abs {
            terms.map(f64::abs).sum()
        } else {
            terms.sum()
        };
        sum * self.scale as f64
    }
    /// Query row `r`'s probabilities in f64 (0 for a masked key).
    fn reference_row(&self, r: usize) -> Vec<f64> {
        let len = self.shape.len;
        let s: Vec<f64> = (0..len).map(|j| self.score(r, j, false)).collect();
        let m = (0..len)
            .filter(|&j| self.keep[j])
            .map(|j| s[j])
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = (0..len)
            .map(|j| if self.keep[j] { (s[j] - m).exp() } else { 0.0 })
            .collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|e| e / z).collect()
    }
    /// `sum_j p_j f(v_jc)`: the context value `c` of a row with
    /// probabilities `p` (`f` the identity), or its mass (`f = abs`).
    fn weighted(&self, p: &[f64], c: usize, f: impl Fn(f64) -> f64) -> f64 {
        let (v, ld) = (self.v(), self.shape.ld);
        (0..self.shape.len)
            .map(|j| p[j] * f(v[j * ld + c] as f64))
            .sum()
    }
    /// The case as the AMX head sees it: Q scaled (in f32) then rounded to
    /// bf16 (its scale then 1), K and V rounded to bf16.
    fn bf16_inputs(&self) -> HeadCase {
        let HeadShape { d, ld, .. } = self.shape;
        let round = |x: f32| bf16_to_f32(f32_to_bf16(x));
        let mut qkv = self.qkv.clone();
        for (i, x) in qkv.iter_mut().enumerate() {
            let in_q = i % ld < d;
            *x = round(if in_q { *x * self.scale } else { *x });
        }
        HeadCase {
            shape: self.shape,
            scale: 1.0,
            qkv,
            keep: self.keep.clone(),
            masked: self.masked,
        }
    }
    /// Row `r`'s columns past the head in `out` are still 7.
    fn check_untouched(&self, out: &[f32], r: usize) {
        let HeadShape { rows, d, ldo, .. } = self.shape;
        if r + 1 < rows {
            for c in d..ldo {
                assert_eq!(out[r * ldo + c], 7.0, "outside the head untouched");
            }
        }
    }
}

/// A 2 x 2 x 4 head, for the refusals (too small a work buffer, too short
/// a Q).
const SMALL_HEAD: HeadShape = HeadShape {
    rows: 2,
    len: 2,
    d: 4,
    ld: 4,
    ldo: 4,
};

#[test]
fn attention_head_matches_reference() {
    use ops::{attention_head, attention_work_floats};
    for isa in Isa::available() {
        for (rows, len, d) in HEAD_DIMS {
            for masked in [false, true] {
                let case = head_case(rows, len, d, masked);
                let (q, k, v) = (case.q(), case.k(), case.v());
                let mut work = vec![f32::NAN; attention_work_floats(rows, len, d)];
                let mut out = case.out();
                let (shape, scale, mask) = (case.shape, case.scale, case.mask());
                attention_head(isa, shape, scale, q, k, v, mask, &mut work, &mut out).unwrap();
                for r in 0..rows {
                    let p = case.reference_row(r);
                    for c in 0..d {
                        let want = case.weighted(&p, c, |x| x);
                        let tol = 1e-5 * (1.0 + want.abs()) + (len + d) as f64 * EPS;
                        close(
                            out[r * shape.ldo + c],
                            want,
                            tol,
                            &format!("{isa:?} {rows}x{len}x{d} r{r} c{c}"),
                        );
                    }
                    case.check_untouched(&out, r);
                }
            }
        }
    }
    let x = vec![0.0; 8];
    let mut out = vec![0.0; 8];
    let mut small = vec![0.0; 3];
    let err = attention_head(
        Isa::Scalar,
        SMALL_HEAD,
        1.0,
        &x,
        &x,
        &x,
        None,
        &mut small,
        &mut out,
    );
    assert!(
        matches!(err, Err(OpsError::Shape { .. })),
        "small work buffer refused"
    );
}

/// AMX products: Q (scaled), K, V and the probabilities are rounded to
/// bf16 (unit roundoff `u = 2^-8`), sums stay in f32. Per score, `|ds_j|
/// <= (3u + (d + 2) eps) S_j` with `S_j = scale sum_p |q_p k_jp|` (the
/// scaled Q rounds once more); a softmax moves by at most a factor
/// `e^(2 max|ds|) - 1` of each probability; rounding P and V adds `2u +
/// u^2`, the f32 sums and exp `(len + 8) eps`, all relative to `sum_j P_j
/// |v_j|`.
///
/// That bound covers any inputs, so it is loose (about 10% of the mass on
/// the 64-wide heads). A second check takes the inputs as the kernel
/// rounds them: then the scores differ only by f32 sums (`ds_j <= (d + 2)
/// eps S'_j`) and the output by rounding P, `u` relative, plus the f32
/// sums: a bound near 0.4% of the mass.
#[test]
fn attention_head_amx_matches_reference_within_bf16_bounds() {
    use ops::{attention_amx_work_floats, attention_head_amx};
    let Some(token) = pinned_kernels::isa::AmxBf16::try_new() else {
        eprintln!("skipped: this CPU has no AMX-BF16");
        return;
    };
    let u = 1.0 / 256.0;
    let dims = HEAD_DIMS.into_iter().chain([(40, 128, 64), (128, 128, 32)]);
    for (rows, len, d) in dims {
        for masked in [false, true] {
            let case = head_case(rows, len, d, masked);
            let (q, k, v) = (case.q(), case.k(), case.v());
            let mut work = vec![f32::NAN; attention_amx_work_floats(rows, len, d)];
            let mut out = case.out();
            let (shape, scale, mask) = (case.shape, case.scale, case.mask());
            attention_head_amx(token, shape, scale, q, k, v, mask, &mut work, &mut out).unwrap();
            for r in 0..rows {
                let ds = (0..len)
                    .map(|j| (3.0 * u + (d + 2) as f64 * EPS) * case.score(r, j, true))
                    .fold(0.0, f64::max);
                let p = case.reference_row(r);
                let rel = ((2.0 * ds).exp() - 1.0) * (1.0 + u) * (1.0 + u)
                    + 2.0 * u
                    + u * u
                    + (len + 8) as f64 * EPS;
                for c in 0..d {
                    let want = case.weighted(&p, c, |x| x);
                    let mass = case.weighted(&p, c, f64::abs);
                    let what = format!("amx {rows}x{len}x{d} masked {masked} r{r} c{c}");
                    close(out[r * shape.ldo + c], want, rel * mass + 1e-7, &what);
                }
                case.check_untouched(&out, r);
            }
            let rounded = case.bf16_inputs();
            for r in 0..rows {
                let ds = (0..len)
                    .map(|j| (d + 2) as f64 * EPS * rounded.score(r, j, true))
                    .fold(0.0, f64::max);
                let p = rounded.reference_row(r);
                let rel = ((2.0 * ds).exp() - 1.0) * (1.0 + u) + u + (len + 8) as f64 * EPS;
                for c in 0..d {
                    let want = rounded.weighted(&p, c, |x| x);
                    let mass = rounded.weighted(&p, c, f64::abs);
                    let what =
                        format!("amx, bf16 inputs, {rows}x{len}x{d} masked {masked} r{r} c{c}");
                    close(out[r * shape.ldo + c], want, rel * mass + 1e-7, &what);
                }
            }
        }
    }
    // Bad calls are refused and write nothing.
    let x = vec![0.0; 8];
    let mut out = vec![3.0; 8];
    let mut small = vec![0.0; 3];
    let err = attention_head_amx(
        token, SMALL_HEAD, 1.0, &x, &x, &x, None, &mut small, &mut out,
    );
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    let mut work = vec![0.0; attention_amx_work_floats(2, 2, 4)];
    let err = attention_head_amx(
        token,
        SMALL_HEAD,
        1.0,
        &x[..5],
        &x,
        &x,
        None,
        &mut work,
        &mut out,
    );
    assert!(matches!(err, Err(OpsError::Shape { .. })), "{err:?}");
    assert!(out.iter().all(|&o| o == 3.0));
}
