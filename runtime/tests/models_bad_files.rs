//! Bad weights files get a typed error naming the file and the tensor,
//! never a panic: truncated, header longer than the file, offsets out of
//! bounds or overlapping, wrong dtype, wrong shape, missing tensor,
//! NaN/Inf. A property test corrupts random bytes of a valid file and
//! asserts an error or a clean load.

mod models_common;

use std::path::Path;

use models_common::{encode, tiny_file_tensors, write_safetensors, write_tiny_bert, TINY_CONFIG};
use pinned_runtime::models::{BertConfig, LoadError, LoadErrorKind, LoadOptions, MiniLm};
use pinned_runtime::Model;
use proptest::prelude::*;
use safetensors::Dtype;

fn tiny_config() -> BertConfig {
    serde_json::from_str(TINY_CONFIG).expect("tiny config")
}

fn load(path: &Path) -> Result<MiniLm, LoadError> {
    MiniLm::load(tiny_config(), path, LoadOptions::default().max_seq(16))
}

fn expect_error(path: &Path, tensor: Option<&str>) -> LoadErrorKind {
    let err = load(path).expect_err("a bad file must not load");
    assert_eq!(err.file, path, "{err}");
    assert_eq!(err.tensor.as_deref(), tensor, "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    err.kind
}

/// The file's bytes with the JSON header replaced (length prefix updated).
fn with_header(bytes: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let new = edit(header);
    let mut out = (new.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn the_valid_tiny_file_loads_in_every_dtype() {
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), dtype);
        let model =
            MiniLm::load_dir(dir.path(), LoadOptions::default().max_seq(16)).expect("loads");
        assert_eq!((model.input_len(), model.output_len()), (32, 32));
    }
}

#[test]
fn truncated_and_oversized_headers_are_format_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), Dtype::F32);
    let good = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let path = dir.path().join("bad.safetensors");
    for cut in [0, 5, 8, 100, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(
            matches!(expect_error(&path, None), LoadErrorKind::Format(_)),
            "cut at {cut}"
        );
    }
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64 * 2).to_le_bytes());
    std::fs::write(&path, &long).unwrap();
    let kind = expect_error(&path, None);
    assert!(
        kind.to_string().contains("header longer than the file"),
        "{kind}"
    );
    let mut trailing = good;
    trailing.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &trailing).unwrap();
    assert!(matches!(
        expect_error(&path, None),
        LoadErrorKind::Format(_)
    ));
}

#[test]
fn offsets_out_of_bounds_or_overlapping_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let tensors = vec![
        (
            "a".to_string(),
            Dtype::F32,
            vec![2],
            encode(&[1.0, 2.0], Dtype::F32),
        ),
        (
            "b".to_string(),
            Dtype::F32,
            vec![2],
            encode(&[3.0, 4.0], Dtype::F32),
        ),
    ];
    write_safetensors(&path, &tensors);
    let good = std::fs::read(&path).unwrap();
    // b overlapping a.
    let overlap = with_header(&good, |h| h.replace("[8,16]", "[4,12]"));
    std::fs::write(&path, &overlap).unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::Format(_)), "{err}");
    assert_eq!(err.tensor.as_deref(), Some("b"), "{err}");
    // b past the end of the file.
    let beyond = with_header(&good, |h| {
        h.replace("[8,16]", "[8,4096]")
            .replace("\"shape\":[2]}", "\"shape\":[1022]}")
    });
    std::fs::write(&path, &beyond).unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err.kind, LoadErrorKind::Format(_)), "{err}");
}

/// The tiny model's file with one tensor replaced.
fn tiny_with(path: &Path, name: &str, dtype: Dtype, shape: Vec<usize>, bytes: Vec<u8>) {
    let mut tensors = tiny_file_tensors(Dtype::F32);
    let t = tensors.iter_mut().find(|t| t.0 == name).expect("tensor");
    *t = (name.to_string(), dtype, shape, bytes);
    write_safetensors(path, &tensors);
}

#[test]
fn wrong_dtype_shape_missing_and_non_finite_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let name = "encoder.layer.1.intermediate.dense.bias";

    tiny_with(&path, name, Dtype::I32, vec![64], vec![0; 256]);
    let kind = expect_error(&path, Some(name));
    assert!(matches!(kind, LoadErrorKind::Dtype { .. }), "{kind}");

    tiny_with(
        &path,
        name,
        Dtype::F32,
        vec![63],
        encode(&[0.5; 63], Dtype::F32),
    );
    match expect_error(&path, Some(name)) {
        LoadErrorKind::Shape { expected, found } => {
            assert_eq!((expected, found), (vec![64], vec![63]))
        }
        other => panic!("{other}"),
    }

    let mut values = vec![0.5f32; 64];
    values[7] = f32::NAN;
    values[9] = f32::INFINITY;
    tiny_with(
        &path,
        name,
        Dtype::F32,
        vec![64],
        encode(&values, Dtype::F32),
    );
    match expect_error(&path, Some(name)) {
        LoadErrorKind::NonFinite { index, count, .. } => assert_eq!((index, count), (7, 2)),
        other => panic!("{other}"),
    }
    // bf16 infinities are caught after conversion too.
    tiny_with(
        &path,
        name,
        Dtype::BF16,
        vec![64],
        encode(&values, Dtype::BF16),
    );
    assert!(matches!(
        expect_error(&path, Some(name)),
        LoadErrorKind::NonFinite { index: 7, .. }
    ));

    let mut tensors = tiny_file_tensors(Dtype::F32);
    tensors.retain(|t| t.0 != "encoder.layer.0.attention.self.value.weight");
    write_safetensors(&path, &tensors);
    let kind = expect_error(&path, Some("encoder.layer.0.attention.self.value.weight"));
    assert!(matches!(kind, LoadErrorKind::Missing), "{kind}");
}

#[test]
fn bad_configs_are_refused_before_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), Dtype::F32);
    let cfg = dir.path().join("config.json");
    for (from, to) in [
        ("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
        ("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\""),
        ("\"vocab_size\": 50", "\"vocab_size\": 0"),
        ("\"hidden_size\": 32", "\"hidden_size\": \"big\""),
    ] {
        std::fs::write(&cfg, TINY_CONFIG.replace(from, to)).unwrap();
        let err = MiniLm::load_dir(dir.path(), LoadOptions::default().max_seq(16)).unwrap_err();
        assert_eq!(err.file, cfg, "{err}");
        assert!(matches!(err.kind, LoadErrorKind::Config(_)), "{err}");
    }
    std::fs::write(&cfg, TINY_CONFIG).unwrap();
    let err = MiniLm::load_dir(dir.path(), LoadOptions::default().max_seq(17)).unwrap_err();
    assert!(
        matches!(err.kind, LoadErrorKind::Config(_)),
        "max_seq above the positions: {err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any corruption loads cleanly (a finite value changed) or is a typed
    /// error naming this file; never a panic.
    #[test]
    fn corrupted_bytes_load_or_fail_cleanly(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        header_bias in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_bert(dir.path(), Dtype::F32);
        let path = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, value) in &edits {
            // Half the cases aim at the header, where parsing can go wrong.
            let i = if header_bias { at.index(header_end) } else { at.index(bytes.len()) };
            bytes[i] = *value;
        }
        std::fs::write(&path, &bytes).unwrap();
        match load(&path) {
            Ok(model) => {
                let emb = model.embed_ids(&[(&[1, 2, 3], &[1, 1, 1])]);
                prop_assert!(emb.is_ok());
            }
            Err(e) => prop_assert_eq!(e.file, path),
        }
    }
}
