//! Shared by the model tests: a tiny BERT written on the fly (so the
//! loader and forward-pass tests always run), the real model's directory
//! from `PINNED_MINILM_DIR`, and comparison helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pinned_runtime::models::MINILM_DIR_VAR;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A small BERT: vocab 50, hidden 32, 2 layers, 4 heads, FFN 64, 16 positions.
pub const TINY_CONFIG: &str = r#"{
  "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "intermediate_size": 64,
  "max_position_embeddings": 16, "type_vocab_size": 2,
  "layer_norm_eps": 1e-12, "hidden_act": "gelu",
  "position_embedding_type": "absolute"
}"#;

/// Every tensor of the tiny BERT, `(name, shape)`, in a fixed order.
pub fn tiny_tensors() -> Vec<(String, Vec<usize>)> {
    let (v, h, i, p, t) = (50, 32, 64, 16, 2);
    let mut out = vec![
        ("embeddings.word_embeddings.weight".to_string(), vec![v, h]),
        ("embeddings.position_embeddings.weight".into(), vec![p, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![t, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..2 {
        let n = |s: &str| format!("encoder.layer.{l}.{s}");
        for part in ["query", "key", "value"] {
            out.push((n(&format!("attention.self.{part}.weight")), vec![h, h]));
            out.push((n(&format!("attention.self.{part}.bias")), vec![h]));
        }
        out.push((n("attention.output.dense.weight"), vec![h, h]));
        out.push((n("attention.output.dense.bias"), vec![h]));
        out.push((n("attention.output.LayerNorm.weight"), vec![h]));
        out.push((n("attention.output.LayerNorm.bias"), vec![h]));
        out.push((n("intermediate.dense.weight"), vec![i, h]));
        out.push((n("intermediate.dense.bias"), vec![i]));
        out.push((n("output.dense.weight"), vec![h, i]));
        out.push((n("output.dense.bias"), vec![h]));
        out.push((n("output.LayerNorm.weight"), vec![h]));
        out.push((n("output.LayerNorm.bias"), vec![h]));
    }
    out
}

/// Deterministic values for tensor `name`: layernorm weights near 1,
/// everything else small, from a hash of the name.
pub fn tiny_values(name: &str, len: usize) -> Vec<f32> {
    let mut state = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let base = if name.ends_with("LayerNorm.weight") {
        1.0
    } else {
        0.0
    };
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            base + u * 0.4
        })
        .collect()
}

/// Encodes `values` as `dtype` little-endian bytes.
pub fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => panic!("no encoder for {other:?}"),
    }
}

/// Serialises tensors (name -> (dtype, shape, bytes)) as a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: BTreeMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    safetensors::serialize_to_file(&views, None, path).expect("write safetensors");
}

/// The tiny BERT's tensors in `dtype`, with `edit` applied to the list.
pub fn tiny_file_tensors(dtype: Dtype) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    tiny_tensors()
        .into_iter()
        .map(|(n, s)| {
            let values = tiny_values(&n, s.iter().product());
            (n, dtype, s, encode(&values, dtype))
        })
        .collect()
}

/// Writes the tiny BERT (config.json + model.safetensors) into `dir`.
pub fn write_tiny_bert(dir: &Path, dtype: Dtype) {
    std::fs::write(dir.join("config.json"), TINY_CONFIG).expect("config");
    write_safetensors(&dir.join("model.safetensors"), &tiny_file_tensors(dtype));
}

/// The real model's directory, or `None` (with a loud note) when the
/// variable is unset; a set but wrong variable fails the test.
pub fn minilm_dir() -> Option<PathBuf> {
    match std::env::var_os(MINILM_DIR_VAR) {
        None => {
            eprintln!(
                "\n*** SKIPPED: {MINILM_DIR_VAR} is not set; the real MiniLM tests need it \
                 (run .ci/fetch-minilm.sh and export {MINILM_DIR_VAR}=<the directory it prints>) ***\n"
            );
            None
        }
        Some(dir) => {
            let dir = PathBuf::from(dir);
            for f in ["model.safetensors", "config.json", "tokenizer.json"] {
                assert!(
                    dir.join(f).is_file(),
                    "{MINILM_DIR_VAR}={} has no {f}",
                    dir.display()
                );
            }
            Some(dir)
        }
    }
}

/// The repository's `tests/fixtures` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Cosine similarity and max absolute difference, in f64.
pub fn compare(got: &[f32], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let dot: f64 = got.iter().zip(want).map(|(a, b)| f64::from(*a) * b).sum();
    let na: f64 = got
        .iter()
        .map(|a| f64::from(*a).powi(2))
        .sum::<f64>()
        .sqrt();
    let nb: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    (dot / (na * nb), max)
}
