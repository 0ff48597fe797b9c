//! Tensor bytes as the file stores them (little-endian f32, f16 or bf16,
//! any alignment) to f32, and the scan for values a model must not hold.

use safetensors::Dtype;

/// The element types a weights file may use for the tensors we read.
pub(crate) fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Appends the tensor's values as f32 to `out` (cleared first). `bytes`
/// holds `count * size(dtype)` bytes, as the loader validated.
pub(crate) fn to_f32(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        // The loader refuses every other dtype before converting.
        _ => {}
    }
}

/// The first non-finite value (index, value) and how many there are.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<(usize, f32, usize)> {
    let first = values.iter().position(|v| !v.is_finite())?;
    let count = values[first..].iter().filter(|v| !v.is_finite()).count();
    Some((first, values[first], count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_float_dtype_round_trips_exact_values() {
        let want = [0.0f32, 1.0, -2.5, 0.125, 65504.0];
        let f32_bytes: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16_bytes: Vec<u8> = want
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16_bytes: Vec<u8> = [0.0f32, 1.0, -2.5, 0.125, 65536.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        to_f32(Dtype::F32, &f32_bytes, &mut out);
        assert_eq!(out, want);
        to_f32(Dtype::F16, &f16_bytes, &mut out);
        assert_eq!(out, want);
        to_f32(Dtype::BF16, &bf16_bytes, &mut out);
        assert_eq!(out, [0.0, 1.0, -2.5, 0.125, 65536.0]);
        assert!(is_float(Dtype::BF16) && !is_float(Dtype::I64));
    }

    #[test]
    fn non_finite_values_are_found_and_counted() {
        assert_eq!(first_non_finite(&[1.0, 2.0]), None);
        let (i, v, n) = first_non_finite(&[1.0, f32::INFINITY, 0.0, f32::NAN]).unwrap();
        assert_eq!((i, v, n), (1, f32::INFINITY, 2));
    }
}
