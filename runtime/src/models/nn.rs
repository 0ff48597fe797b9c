//! The row-wise transformer ops MiniLM needs around its GEMMs: layernorm,
//! masked softmax, mean pooling over a mask, L2 normalisation. Plain loops
//! the compiler vectorises; none allocates.

/// `x = (x - mean) / sqrt(var + eps) * gamma + beta` for each of the
/// `x.len() / n` rows of width `n` (biased variance, as PyTorch).
pub(crate) fn layernorm_rows(x: &mut [f32], n: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    let (gamma, beta) = (&gamma[..n], &beta[..n]);
    for row in x.chunks_exact_mut(n) {
        let mean = row.iter().sum::<f32>() / n as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// Softmax of one row of scores over the keys whose `mask` is non-zero;
/// masked keys get probability 0. A row with no key left is all zeros.
pub(crate) fn softmax_masked(row: &mut [f32], mask: &[f32]) {
    let mask = &mask[..row.len()];
    let max = row
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m != 0.0)
        .map(|(v, _)| *v)
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    for (v, m) in row.iter_mut().zip(mask) {
        *v = if *m != 0.0 { (*v - max).exp() } else { 0.0 };
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `out = sum_t mask[t] * x[t] / max(sum_t mask[t], 1e-9)` over the rows
/// of `x` (width `out.len()`), as sentence-transformers' mean pooling.
pub(crate) fn mean_pool(x: &[f32], mask: &[f32], out: &mut [f32]) {
    let n = out.len();
    out.fill(0.0);
    let mut count = 0.0f32;
    for (row, &m) in x.chunks_exact(n).zip(mask) {
        if m != 0.0 {
            count += m;
            for (o, v) in out.iter_mut().zip(row) {
                *o += m * v;
            }
        }
    }
    let inv = 1.0 / count.max(1e-9);
    out.iter_mut().for_each(|o| *o *= inv);
}

/// `x /= max(||x||_2, 1e-12)` (PyTorch's `F.normalize`).
pub(crate) fn l2_normalize(x: &mut [f32]) {
    let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
    let inv = 1.0 / norm.max(1e-12);
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layernorm_centres_and_scales() {
        let mut x = [1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
        layernorm_rows(
            &mut x,
            4,
            &[1.0, 1.0, 2.0, 2.0],
            &[0.0, 0.0, 0.0, 1.0],
            1e-12,
        );
        let inv = 1.0 / 1.25f32.sqrt();
        let want = [
            -1.5 * inv,
            -0.5 * inv,
            2.0 * 0.5 * inv,
            2.0 * 1.5 * inv + 1.0,
        ];
        for (g, w) in x[..4].iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
        assert_eq!(
            &x[4..],
            &[0.0, 0.0, 0.0, 1.0],
            "a constant row maps to beta"
        );
    }

    #[test]
    fn softmax_ignores_masked_keys() {
        let mut row = [1.0, 2.0, 100.0, 3.0];
        softmax_masked(&mut row, &[1.0, 1.0, 0.0, 1.0]);
        let z = 1f32.exp() + 2f32.exp() + 3f32.exp();
        assert!((row[0] - 1f32.exp() / z).abs() < 1e-6);
        assert_eq!(row[2], 0.0);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let mut none = [1.0, 2.0];
        softmax_masked(&mut none, &[0.0, 0.0]);
        assert_eq!(none, [0.0, 0.0]);
    }

    #[test]
    fn pooling_and_normalising() {
        let x = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mut out = [0.0; 2];
        mean_pool(&x, &[1.0, 1.0, 0.0], &mut out);
        assert_eq!(out, [2.0, 3.0]);
        l2_normalize(&mut out);
        assert!((out[0] - 2.0 / 13f32.sqrt()).abs() < 1e-6);
        let mut zero = [0.0; 3];
        l2_normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }
}
