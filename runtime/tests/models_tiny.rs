//! The MiniLM forward pass on a tiny BERT written on the fly, against a
//! straightforward f64 evaluation of the same weights: one request and
//! batches of varied lengths, padding in and after the sequence, every
//! precision, every placement, and refused inputs. Always runs.

mod models_common;

use models_common::{compare, tiny_values, write_tiny_bert};
use pinned_allocator::{IdList, Topology};
use pinned_kernels::precision::Precision;
use pinned_runtime::models::{LoadOptions, MiniLm, WeightPlacement};
use pinned_runtime::{Model, ModelError, Scratch};
use safetensors::Dtype;

const H: usize = 32;
const HEADS: usize = 4;
const FFN: usize = 64;
const LAYERS: usize = 2;

fn tensor(name: &str, len: usize) -> Vec<f64> {
    tiny_values(name, len).into_iter().map(f64::from).collect()
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - t * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))))
            * (-x * x).exp();
    y.copysign(x)
}

fn layernorm(x: &mut [f64], g: &[f64], b: &[f64]) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    for ((v, g), b) in x.iter_mut().zip(g).zip(b) {
        *v = (*v - mean) / (var + 1e-12).sqrt() * g + b;
    }
}

/// `y = W x + b` with W stored `[out][in]`.
fn linear(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    b.iter()
        .enumerate()
        .map(|(j, bj)| {
            bj + x
                .iter()
                .zip(&w[j * x.len()..])
                .map(|(a, c)| a * c)
                .sum::<f64>()
        })
        .collect()
}

/// The tiny BERT evaluated directly, in f64.
fn reference(ids: &[u32], mask: &[u32]) -> Vec<f64> {
    let len = ids.len();
    let (word, pos, typ) = (
        tensor("embeddings.word_embeddings.weight", 50 * H),
        tensor("embeddings.position_embeddings.weight", 16 * H),
        tensor("embeddings.token_type_embeddings.weight", 2 * H),
    );
    let (g, b) = (
        tensor("embeddings.LayerNorm.weight", H),
        tensor("embeddings.LayerNorm.bias", H),
    );
    let mut x: Vec<Vec<f64>> = (0..len)
        .map(|t| {
            let mut row: Vec<f64> = (0..H)
                .map(|j| word[ids[t] as usize * H + j] + pos[t * H + j] + typ[j])
                .collect();
            layernorm(&mut row, &g, &b);
            row
        })
        .collect();
    let d = H / HEADS;
    for l in 0..LAYERS {
        let t = |s: &str, n: usize| tensor(&format!("encoder.layer.{l}.{s}"), n);
        let lin = |x: &[f64], s: &str, out: usize, inp: usize| {
            linear(
                x,
                &t(&format!("{s}.weight"), out * inp),
                &t(&format!("{s}.bias"), out),
            )
        };
        let q: Vec<_> = x
            .iter()
            .map(|r| lin(r, "attention.self.query", H, H))
            .collect();
        let k: Vec<_> = x
            .iter()
            .map(|r| lin(r, "attention.self.key", H, H))
            .collect();
        let v: Vec<_> = x
            .iter()
            .map(|r| lin(r, "attention.self.value", H, H))
            .collect();
        let mut ctx = vec![vec![0.0; H]; len];
        for h in 0..HEADS {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..d)
                            .map(|c| q[i][h * d + c] * k[j][h * d + c])
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = (0..len)
                    .filter(|&j| mask[j] == 1)
                    .map(|j| s[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = (0..len)
                    .map(|j| {
                        if mask[j] == 1 {
                            (s[j] - max).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let z: f64 = e.iter().sum();
                for c in 0..d {
                    ctx[i][h * d + c] = (0..len).map(|j| e[j] / z * v[j][h * d + c]).sum();
                }
            }
        }
        let (g1, b1) = (
            t("attention.output.LayerNorm.weight", H),
            t("attention.output.LayerNorm.bias", H),
        );
        let (g2, b2) = (
            t("output.LayerNorm.weight", H),
            t("output.LayerNorm.bias", H),
        );
        for i in 0..len {
            let mut a = lin(&ctx[i], "attention.output.dense", H, H);
            a.iter_mut().zip(&x[i]).for_each(|(a, r)| *a += r);
            layernorm(&mut a, &g1, &b1);
            let f: Vec<f64> = lin(&a, "intermediate.dense", FFN, H)
                .into_iter()
                .map(|u| 0.5 * u * (1.0 + erf(u / std::f64::consts::SQRT_2)))
                .collect();
            let mut y = lin(&f, "output.dense", H, FFN);
            y.iter_mut().zip(&a).for_each(|(y, r)| *y += r);
            layernorm(&mut y, &g2, &b2);
            x[i] = y;
        }
    }
    let count = mask.iter().filter(|&&m| m == 1).count().max(1) as f64;
    let mut pooled = vec![0.0; H];
    for (row, &m) in x.iter().zip(mask) {
        if m == 1 {
            pooled
                .iter_mut()
                .zip(row)
                .for_each(|(p, r)| *p += r / count);
        }
    }
    let norm = pooled.iter().map(|p| p * p).sum::<f64>().sqrt().max(1e-12);
    pooled.iter().map(|p| p / norm).collect()
}

fn cases() -> Vec<(Vec<u32>, Vec<u32>)> {
    vec![
        (vec![7], vec![1]),
        (vec![1, 2, 3, 4, 5], vec![1; 5]),
        ((0..16).map(|i| (i * 7 + 3) % 50).collect(), vec![1; 16]),
        // Padding inside the sequence (a masked key) and after it.
        (vec![4, 9, 0, 33, 12, 0, 0], vec![1, 1, 0, 1, 1, 0, 0]),
    ]
}

fn tiny(dtype: Dtype, opts: LoadOptions) -> (tempfile::TempDir, MiniLm) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), dtype);
    let model = MiniLm::load_dir(dir.path(), opts.max_seq(16)).expect("tiny loads");
    (dir, model)
}

#[test]
fn fp32_matches_the_f64_reference_alone_and_batched() {
    let (_dir, model) = tiny(Dtype::F32, LoadOptions::default());
    let cases = cases();
    let batch: Vec<(&[u32], &[u32])> = cases.iter().map(|(i, m)| (&i[..], &m[..])).collect();
    let together = model.embed_ids(&batch).unwrap();
    for ((ids, mask), batched) in cases.iter().zip(&together) {
        let want = reference(ids, mask);
        let alone = &model.embed_ids(&[(ids, mask)]).unwrap()[0];
        for got in [alone, batched] {
            let (cos, max) = compare(got, &want);
            assert!(
                cos > 0.99999 && max < 1e-4,
                "{ids:?}: cosine {cos}, max error {max}"
            );
        }
        let trimmed = mask.iter().rposition(|&m| m == 1).unwrap() + 1;
        let short = &model
            .embed_ids(&[(&ids[..trimmed], &mask[..trimmed])])
            .unwrap()[0];
        let (_, diff) = compare(
            short,
            &alone.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        );
        assert!(diff < 1e-6, "trailing padding changes nothing ({diff})");
    }
}

#[test]
fn a_request_on_a_team_matches_the_reference_in_every_precision() {
    let cases = cases();
    let batch: Vec<(&[u32], &[u32])> = cases.iter().map(|(i, m)| (&i[..], &m[..])).collect();
    for (precision, min_cos) in [
        (Precision::F32, 0.99999),
        (Precision::Bf16, 0.999),
        (Precision::Int8, 0.99),
    ] {
        for threads in [2, 3] {
            let opts = LoadOptions::default().precision(precision).threads(threads);
            let (_dir, model) = tiny(Dtype::F32, opts);
            let together = model.embed_ids(&batch).unwrap();
            for ((ids, mask), got) in cases.iter().zip(&together) {
                let alone = &model.embed_ids(&[(ids, mask)]).unwrap()[0];
                for g in [alone, got] {
                    let (cos, _) = compare(g, &reference(ids, mask));
                    assert!(
                        cos >= min_cos,
                        "{precision} on {threads} threads, {ids:?}: cosine {cos}"
                    );
                }
            }
        }
    }
}

#[test]
fn half_precision_files_and_low_precision_weights_stay_close() {
    let cases = cases();
    for (dtype, precision, min_cos) in [
        (Dtype::F16, Precision::F32, 0.9999),
        (Dtype::BF16, Precision::F32, 0.999),
        (Dtype::F32, Precision::Bf16, 0.999),
        (Dtype::F32, Precision::Int8, 0.99),
    ] {
        let (_dir, model) = tiny(dtype, LoadOptions::default().precision(precision));
        assert_eq!(model.precision(), precision);
        for (ids, mask) in &cases {
            let got = &model.embed_ids(&[(ids, mask)]).unwrap()[0];
            let (cos, _) = compare(got, &reference(ids, mask));
            assert!(
                cos >= min_cos,
                "{dtype:?} file, {precision} weights, {ids:?}: cosine {cos}"
            );
        }
    }
}

#[test]
fn every_placement_gives_the_same_embeddings() {
    let nodes = Topology::detect().unwrap().memory_nodes();
    let first = nodes.as_slice()[0];
    let (_dir, base) = tiny(Dtype::F32, LoadOptions::default());
    let want = base.embed_ids(&[(&[1, 2, 3], &[1, 1, 1])]).unwrap();
    for placement in [
        WeightPlacement::Node(first),
        WeightPlacement::Interleave(nodes.clone()),
        WeightPlacement::Replicate(nodes.clone()),
    ] {
        let (_dir, model) = tiny(
            Dtype::F32,
            LoadOptions::default().placement(placement.clone()),
        );
        assert_eq!(model.placement(), &placement);
        let copies = model.weight_nodes();
        match &placement {
            WeightPlacement::Node(n) => assert_eq!(copies, vec![(Some(*n), Some(*n))]),
            WeightPlacement::Replicate(list) => {
                let want: Vec<_> = list.iter().map(|n| (Some(n), Some(n))).collect();
                assert_eq!(copies, want, "one copy on each node");
            }
            _ => assert_eq!(copies.len(), 1),
        }
        assert_eq!(
            model.embed_ids(&[(&[1, 2, 3], &[1, 1, 1])]).unwrap(),
            want,
            "{placement}"
        );
    }
    let missing = IdList::from_ids(vec![nodes.max().unwrap() + 1]);
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), Dtype::F32);
    let opts = LoadOptions::default()
        .max_seq(16)
        .placement(WeightPlacement::Replicate(missing));
    assert!(
        MiniLm::load_dir(dir.path(), opts).is_err(),
        "a node that does not exist is refused"
    );
}

#[test]
fn bad_requests_are_refused_and_empty_ones_are_zero() {
    let (_dir, model) = tiny(Dtype::F32, LoadOptions::default());
    let mut scratch = Scratch::standalone(model.scratch_size(1)).unwrap();
    let mut input = vec![0.0; model.input_len()];
    let mut out = vec![1.0; model.output_len()];
    model
        .run(1, &input, &mut out, &mut scratch)
        .expect("all padding");
    assert!(out.iter().all(|&v| v == 0.0), "no token: a zero embedding");
    model.encode_request(&[3, 50], &[1, 1], &mut input).unwrap();
    let err = model.run(1, &input, &mut out, &mut scratch).unwrap_err();
    assert!(
        matches!(err, ModelError::Shape(ref m) if m.contains("token id 50")),
        "{err}"
    );
    model.encode_request(&[3, 4], &[1, 1], &mut input).unwrap();
    input[16] = 0.5;
    assert!(
        model.run(1, &input, &mut out, &mut scratch).is_err(),
        "mask values are 0 or 1"
    );
    input[16] = 1.0;
    input[1] = 2.5;
    assert!(
        model.run(1, &input, &mut out, &mut scratch).is_err(),
        "ids are integers"
    );
    assert!(
        model
            .encode_request(&[1; 17], &[1; 17], &mut input)
            .is_err(),
        "longer than max_seq"
    );
    assert!(model.encode_request(&[1; 3], &[1; 2], &mut input).is_err());
    let mut small = Scratch::standalone(model.scratch_size(1)).unwrap();
    let mut out2 = vec![0.0; 2 * model.output_len()];
    let two = vec![0.0; 2 * model.input_len()];
    assert!(matches!(
        model.run(2, &two, &mut out2, &mut small),
        Err(ModelError::Scratch { .. })
    ));
}

#[test]
fn the_sample_input_is_a_request_the_model_serves() {
    let (_dir, model) = tiny(Dtype::F32, LoadOptions::default());
    let mut input = vec![0.0f32; model.input_len()];
    model.sample_input(&mut input);
    let (ids, mask) = input.split_at(input.len() / 2);
    // Whole token ids inside the vocabulary, a mask of ones then zeros.
    assert!(ids
        .iter()
        .all(|&v| v >= 0.0 && v.fract() == 0.0 && v < 50.0));
    let len = mask.iter().filter(|&&m| m == 1.0).count();
    assert!(len >= 2 && mask[..len].iter().all(|&m| m == 1.0));
    assert!(mask[len..].iter().all(|&m| m == 0.0));
    let as_ids: Vec<u32> = ids[..len].iter().map(|&v| v as u32).collect();
    let want = reference(&as_ids, &vec![1; len]);
    let got = &model.embed_ids(&[(&as_ids, &vec![1; len])]).unwrap()[0];
    let (cos, _) = compare(got, &want);
    assert!(cos > 0.99999, "cosine {cos}");
}
