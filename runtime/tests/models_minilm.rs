//! all-MiniLM-L6-v2 against the committed sentence-transformers reference
//! (tests/fixtures/minilm/reference.json), in every precision this machine
//! runs natively, alone and in a padded batch, from ids and from text, and
//! served by a runtime partition. Needs `PINNED_MINILM_DIR` (skips loudly
//! without it).

mod models_common;

use std::sync::Arc;
use std::time::Duration;

use models_common::{compare, fixtures, minilm_dir};
use pinned_kernels::precision::Precision;
use pinned_runtime::models::{LoadOptions, MiniLm};
use pinned_runtime::{Model, PartitionConfig, Runtime, RuntimeConfig};

#[derive(serde::Deserialize)]
struct Reference {
    max_seq_length: usize,
    sentences: Vec<Sentence>,
}

#[derive(serde::Deserialize)]
struct Sentence {
    text: String,
    input_ids: Vec<u32>,
    attention_mask: Vec<u32>,
    embedding: Vec<f64>,
}

fn reference() -> Reference {
    let path = fixtures().join("minilm/reference.json");
    let text = std::fs::read_to_string(&path).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

/// The bounds the model issue sets: (min cosine, max abs error).
fn bounds(p: Precision) -> (f64, f64) {
    match p {
        Precision::F32 => (0.99999, 1e-4),
        Precision::Bf16 => (0.999, f64::INFINITY),
        Precision::Int8 => (0.99, f64::INFINITY),
    }
}

fn precisions() -> Vec<Precision> {
    Precision::ALL
        .into_iter()
        .filter(|p| p.is_native())
        .collect()
}

#[test]
fn embeddings_match_sentence_transformers_in_every_native_precision() {
    let Some(dir) = minilm_dir() else { return };
    let reference = reference();
    for (precision, threads) in precisions().into_iter().flat_map(|p| [(p, 1), (p, 2)]) {
        let opts = LoadOptions::default().precision(precision).threads(threads);
        let model = MiniLm::load_dir(&dir, opts).expect("load");
        assert_eq!(model.precision(), precision);
        // One request at a time, from the fixture's ids.
        let mut worst = (1.0f64, 0.0f64);
        for s in &reference.sentences {
            let got = model
                .embed_ids(&[(&s.input_ids, &s.attention_mask)])
                .expect("embed");
            let (cos, max) = compare(&got[0], &s.embedding);
            worst = (worst.0.min(cos), worst.1.max(max));
        }
        // All seven in one batch of varied lengths.
        let batch: Vec<(&[u32], &[u32])> = reference
            .sentences
            .iter()
            .map(|s| (&s.input_ids[..], &s.attention_mask[..]))
            .collect();
        let got = model.embed_ids(&batch).expect("batch");
        for (g, s) in got.iter().zip(&reference.sentences) {
            let (cos, max) = compare(g, &s.embedding);
            worst = (worst.0.min(cos), worst.1.max(max));
        }
        eprintln!(
            "MiniLM {precision} on {} x {threads}: min cosine {:.7}, max abs error {:.2e}",
            model.kernel_path(),
            worst.0,
            worst.1
        );
        let (min_cos, max_err) = bounds(precision);
        assert!(
            worst.0 >= min_cos,
            "{precision}: cosine {} < {min_cos}",
            worst.0
        );
        assert!(
            worst.1 < max_err,
            "{precision}: max abs error {} >= {max_err}",
            worst.1
        );
    }
}

#[test]
fn tokenizer_reproduces_the_reference_ids_and_text_embeds_the_same() {
    let Some(dir) = minilm_dir() else { return };
    let reference = reference();
    let opts = LoadOptions::default().max_seq(reference.max_seq_length);
    let model = MiniLm::load_dir(&dir, opts).expect("load");
    let tok = model.tokenizer().expect("tokenizer.json loaded");
    for s in &reference.sentences {
        let enc = tok.encode(&s.text).expect("encode");
        assert_eq!(enc.ids, s.input_ids, "ids of {:?}", s.text);
        assert_eq!(enc.mask, s.attention_mask, "mask of {:?}", s.text);
    }
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    let got = model.embed_texts(&texts).expect("embed texts");
    for (g, s) in got.iter().zip(&reference.sentences) {
        let (cos, _) = compare(g, &s.embedding);
        assert!(cos >= 0.99999, "{:?}: cosine {cos}", s.text);
    }
}

#[test]
fn served_by_a_partition_with_padding_in_the_request() {
    let Some(dir) = minilm_dir() else { return };
    let reference = reference();
    let model =
        Arc::new(MiniLm::load_dir(&dir, LoadOptions::default().max_seq(128)).expect("load"));
    let mut rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let part = rt
        .add_partition(
            PartitionConfig {
                workers: 1,
                slots: 4,
                ..PartitionConfig::new("minilm", "all")
            },
            model.clone(),
        )
        .expect("partition");
    assert_eq!(part.input_len(), model.input_len());
    let t = Duration::from_secs(60);
    for s in &reference.sentences {
        let mut req = part.acquire(t).expect("slot");
        model
            .encode_request(
                &s.input_ids,
                &s.attention_mask,
                req.input_mut().expect("input"),
            )
            .expect("encode");
        req.submit().expect("submit");
        req.wait(t).expect("served");
        let (cos, max) = compare(req.output().expect("output"), &s.embedding);
        assert!(
            cos >= 0.99999 && max < 1e-4,
            "{:?}: cosine {cos}, max {max}",
            s.text
        );
        req.release();
    }
    rt.shutdown();
}
