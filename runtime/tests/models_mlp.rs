//! The manifest MLP against NumPy (tests/fixtures/mlp: weights in f32,
//! f16 and bf16 tensors, GELU / ReLU / none, outputs computed in float64
//! by make_tiny_mlp.py), in every precision, alone, batched and served;
//! manifests that must be refused; and the built-in MLP (generated
//! weights, node-placed) against `DenseMlp`'s scalar reference.

mod models_common;

use std::sync::Arc;
use std::time::Duration;

use models_common::{compare, fixtures};
use pinned_allocator::Topology;
use pinned_kernels::precision::Precision;
use pinned_runtime::models::{LoadErrorKind, LoadOptions, Mlp, WeightPlacement};
use pinned_runtime::{DenseMlp, Model, PartitionConfig, Runtime, RuntimeConfig, Scratch};

#[derive(serde::Deserialize)]
struct Reference {
    widths: Vec<usize>,
    inputs: Vec<Vec<f64>>,
    outputs: Vec<Vec<f64>>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("mlp/tiny_mlp_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(precision: Precision) -> Mlp {
    load_on(precision, 1)
}

/// With `threads > 1` a request alone in flight runs on a team: the first
/// call alone, the next on the team, then the cheaper (both get tested).
fn load_on(precision: Precision, threads: usize) -> Mlp {
    Mlp::load(
        fixtures().join("mlp/tiny_mlp.json"),
        LoadOptions::default().precision(precision).threads(threads),
    )
    .expect("load")
}

/// fp32 within 1e-5 of the f64 reference; bf16 and int8 by cosine, as
/// their weights are rounded (and int8's activations quantised per row).
fn assert_close(precision: Precision, got: &[f32], want: &[f64], case: &str) {
    let (cos, max) = compare(got, want);
    let ok = match precision {
        Precision::F32 => max < 1e-5,
        Precision::Bf16 => cos >= 0.999,
        Precision::Int8 => cos >= 0.99,
    };
    assert!(ok, "{precision} {case}: cosine {cos}, max abs error {max}");
}

#[test]
fn matches_numpy_in_every_precision_alone_and_batched() {
    let r = reference();
    for (precision, threads) in Precision::ALL
        .into_iter()
        .flat_map(|p| [(p, 1), (p, 2), (p, 3)])
    {
        let mlp = load_on(precision, threads);
        assert_eq!(mlp.widths(), &r.widths[..]);
        let batch = r.inputs.len();
        let inputs: Vec<f32> = r.inputs.iter().flatten().map(|&v| v as f32).collect();
        let mut scratch = Scratch::standalone(mlp.scratch_size(batch)).unwrap();
        let mut out = vec![f32::NAN; batch * mlp.output_len()];
        mlp.run(batch, &inputs, &mut out, &mut scratch).unwrap();
        let mut single = vec![f32::NAN; mlp.output_len()];
        for (b, want) in r.outputs.iter().enumerate() {
            let x = &inputs[b * mlp.input_len()..(b + 1) * mlp.input_len()];
            mlp.run(1, x, &mut single, &mut scratch).unwrap();
            for got in [
                &out[b * mlp.output_len()..(b + 1) * mlp.output_len()],
                &single[..],
            ] {
                assert_close(
                    precision,
                    got,
                    want,
                    &format!("on {threads} threads, row {b}"),
                );
            }
        }
    }
}

#[test]
fn served_by_a_partition() {
    let r = reference();
    let mlp = Arc::new(load(Precision::F32));
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let part = rt
        .add_partition(
            PartitionConfig {
                workers: 1,
                slots: 2,
                ..PartitionConfig::new("mlp", "all")
            },
            mlp,
        )
        .unwrap();
    let t = Duration::from_secs(30);
    for (x, want) in r.inputs.iter().zip(&r.outputs) {
        let mut req = part.acquire(t).unwrap();
        for (d, s) in req.input_mut().unwrap().iter_mut().zip(x) {
            *d = *s as f32;
        }
        req.submit().unwrap();
        req.wait(t).unwrap();
        let (_, max) = compare(req.output().unwrap(), want);
        assert!(max < 1e-5, "served: {max}");
        req.release();
    }
    rt.shutdown();
}

#[test]
fn bad_manifests_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("mlp/tiny_mlp.safetensors"),
        dir.path().join("w.safetensors"),
    )
    .unwrap();
    let manifest = dir.path().join("m.json");
    let layer =
        |w: &str, act: &str| format!(r#"{{"weight": "{w}", "bias": null, "activation": "{act}"}}"#);
    let cases = [
        (
            format!(
                r#"{{"weights": "w.safetensors", "layers": [{}]}}"#,
                layer("fc1.weight", "swish")
            ),
            "activation",
        ),
        (
            format!(
                r#"{{"weights": "w.safetensors", "layers": [{}, {}]}}"#,
                layer("fc1.weight", "gelu"),
                layer("fc3.weight", "none")
            ),
            "shape",
        ),
        (
            format!(
                r#"{{"weights": "w.safetensors", "layers": [{}]}}"#,
                layer("fc9.weight", "none")
            ),
            "missing",
        ),
        (
            r#"{"weights": "w.safetensors", "layers": []}"#.to_string(),
            "no layers",
        ),
        (
            r#"{"weights": "w.safetensors", "layers": [], "extra": 1}"#.to_string(),
            "unknown field",
        ),
        (
            format!(
                r#"{{"weights": "nope.safetensors", "layers": [{}]}}"#,
                layer("fc1.weight", "none")
            ),
            "cannot read",
        ),
    ];
    for (text, what) in cases {
        std::fs::write(&manifest, &text).unwrap();
        let err = Mlp::load(&manifest, LoadOptions::default())
            .err()
            .expect(what);
        assert!(err.to_string().contains(what), "{what}: {err}");
        if what == "missing" {
            assert_eq!(err.tensor.as_deref(), Some("fc9.weight"));
            assert!(matches!(err.kind, LoadErrorKind::Missing));
        }
    }
}

/// The built-in MLP draws `DenseMlp`'s weights and computes its function
/// in every precision, its weights where each placement puts them.
#[test]
fn the_built_in_mlp_is_dense_mlp_placed() {
    let widths = [48, 200, 40, 72];
    let dense = DenseMlp::new(&widths, 7).unwrap();
    let batch = 3;
    let inputs: Vec<f32> = (0..batch * widths[0])
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let want: Vec<Vec<f64>> = inputs
        .chunks(widths[0])
        .map(|x| dense.reference(x).into_iter().map(f64::from).collect())
        .collect();
    let nodes = Topology::detect().unwrap().memory_nodes();
    let first = nodes.as_slice()[0];
    let placements = [
        WeightPlacement::Os,
        WeightPlacement::Node(first),
        WeightPlacement::Interleave(nodes.clone()),
        WeightPlacement::Replicate(nodes.clone()),
    ];
    for precision in Precision::ALL {
        for placement in &placements {
            let options = LoadOptions::default()
                .precision(precision)
                .placement(placement.clone());
            let mlp = Mlp::generated(&widths, 7, options).unwrap();
            assert_eq!(mlp.widths(), &widths[..]);
            match placement {
                WeightPlacement::Node(n) => {
                    assert_eq!(mlp.weight_nodes(), vec![(Some(*n), Some(*n))])
                }
                WeightPlacement::Replicate(list) => {
                    let each: Vec<_> = list.iter().map(|n| (Some(n), Some(n))).collect();
                    assert_eq!(mlp.weight_nodes(), each, "one copy on each node");
                }
                _ => assert_eq!(mlp.weight_nodes().len(), 1),
            }
            let mut scratch = Scratch::standalone(mlp.scratch_size(batch)).unwrap();
            let mut out = vec![f32::NAN; batch * mlp.output_len()];
            mlp.run(batch, &inputs, &mut out, &mut scratch).unwrap();
            for (b, want) in want.iter().enumerate() {
                let got = &out[b * widths[3]..(b + 1) * widths[3]];
                assert_close(precision, got, want, &format!("{placement}, row {b}"));
            }
        }
    }
    let refused = Mlp::generated(&[8, 0, 4], 7, LoadOptions::default());
    assert!(
        matches!(&refused, Err(e) if matches!(e.kind, LoadErrorKind::Config(_))),
        "a zero width is refused"
    );
}
