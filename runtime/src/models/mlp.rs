//! A dense MLP described by a small JSON manifest (layers, tensor names,
//! activations) over a safetensors file, or the built-in one with
//! generated weights, packed per precision into node-placed memory like
//! MiniLM. [`DenseMlp`](crate::DenseMlp) draws the same built-in weights
//! onto the heap, with a scalar reference for tests.
//!
//! ```json
//! { "weights": "mlp.safetensors",
//!   "layers": [ { "weight": "fc1.weight", "bias": "fc1.bias", "activation": "gelu" },
//!               { "weight": "fc2.weight", "bias": "fc2.bias", "activation": "none" } ] }
//! ```
//! Weights are PyTorch `Linear` layout, `[out][in]`; a layer's `in` must be
//! the previous layer's `out`.

use std::path::{Path, PathBuf};

use pinned_kernels::gemm::{Activation, Epilogue, MatRef};
use pinned_kernels::precision::PackedWeights;

use super::minilm::LoadOptions;
use super::safetensors_load::{LoadError, LoadErrorKind, WeightsFile};
use super::store::{self, matrix_bytes, vector_bytes, NodeStore};
use super::team::ModelTeam;
use crate::model::{generated_layers, run_layer_chain};
use crate::model::{Model, ModelError, Scratch, ScratchSize};

/// The manifest file.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpManifest {
    /// Weights file, relative to the manifest's directory.
    pub weights: PathBuf,
    pub layers: Vec<MlpLayerSpec>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpLayerSpec {
    pub weight: String,
    pub bias: Option<String>,
    /// `none`, `relu`, `gelu` (erf), `gelu_tanh`.
    #[serde(default = "none")]
    pub activation: String,
}

fn none() -> String {
    "none".into()
}

fn activation(name: &str) -> Option<Activation> {
    Some(match name {
        "none" => Activation::None,
        "relu" => Activation::Relu,
        "gelu" | "gelu_erf" => Activation::GeluErf,
        "gelu_tanh" => Activation::GeluTanh,
        _ => return None,
    })
}

struct Layer {
    weights: PackedWeights<'static>,
    bias: Option<&'static [f32]>,
    activation: Activation,
}

/// A copy of the layers and its memory. Invariant: `layers` borrow
/// `store`, and drop first (declaration order).
struct Replica {
    layers: Vec<Layer>,
    store: NodeStore,
}

/// One layer's tensors as read or drawn: the weight `[out][in]`
/// (`out_major`, PyTorch's `Linear`) or `[in][out]`, and the tensor name
/// errors should blame.
struct LayerTensors {
    weight: Vec<f32>,
    out_major: bool,
    bias: Option<Vec<f32>>,
    label: Option<String>,
}

fn default_name(widths: &[usize], options: &LoadOptions) -> String {
    let w: Vec<String> = widths.iter().map(usize::to_string).collect();
    format!("mlp-{}-{}", w.join("-"), options.precision)
}

/// A dense MLP whose weights live in node-placed memory, packed for one
/// precision: loaded from a manifest, or the built-in one with generated
/// weights ([`Mlp::generated`]). Served as a runtime model (input and
/// output f32 vectors of the first `in` and last `out` widths).
pub struct Mlp {
    widths: Vec<usize>,
    options: LoadOptions,
    replicas: Vec<Replica>,
    copy_of_cpu: Vec<u8>,
    name: String,
    /// Lent to a batch that is alone in flight (see `team.rs`): the GEMMs
    /// of one batch then run on the partition's cores together, reading
    /// the weights once for all of its rows.
    team: ModelTeam,
}

impl Mlp {
    /// Reads `manifest` (JSON) and the weights file it names.
    pub fn load(manifest: impl AsRef<Path>, options: LoadOptions) -> Result<Self, LoadError> {
        let manifest = manifest.as_ref();
        let err = |kind| LoadError::new(manifest, None, kind);
        let text = std::fs::read_to_string(manifest).map_err(|e| err(LoadErrorKind::Io(e)))?;
        let spec: MlpManifest =
            serde_json::from_str(&text).map_err(|e| err(LoadErrorKind::Config(e.to_string())))?;
        if spec.layers.is_empty() {
            return Err(err(LoadErrorKind::Config("no layers".into())));
        }
        let dir = manifest.parent().unwrap_or(Path::new("."));
        let file = WeightsFile::open(dir.join(&spec.weights))?;

        // Widths from the shapes: [out][in] each, chained.
        let mut widths = Vec::with_capacity(spec.layers.len() + 1);
        let mut acts = Vec::with_capacity(spec.layers.len());
        for l in &spec.layers {
            let shape = file.shape(&l.weight)?;
            let [out, inp] = shape[..] else {
                return Err(file.error(
                    &l.weight,
                    LoadErrorKind::Shape {
                        expected: vec![0, 0],
                        found: shape,
                    },
                ));
            };
            if out == 0 || inp == 0 || widths.last().is_some_and(|&prev| prev != inp) {
                let expected = vec![out, *widths.last().unwrap_or(&inp)];
                return Err(file.error(
                    &l.weight,
                    LoadErrorKind::Shape {
                        expected,
                        found: shape,
                    },
                ));
            }
            if widths.is_empty() {
                widths.push(inp);
            }
            widths.push(out);
            let act = activation(&l.activation).ok_or_else(|| {
                err(LoadErrorKind::Config(format!(
                    "unknown activation `{}`",
                    l.activation
                )))
            })?;
            acts.push(act);
        }
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| default_name(&widths, &options));
        let dims = widths.clone();
        let read = |idx: usize| -> Result<LayerTensors, LoadError> {
            let (l, inp, out) = (&spec.layers[idx], dims[idx], dims[idx + 1]);
            Ok(LayerTensors {
                weight: file.tensor_f32(&l.weight, &[out, inp])?,
                out_major: true,
                bias: l
                    .bias
                    .as_ref()
                    .map(|b| file.tensor_f32(b, &[out]))
                    .transpose()?,
                label: Some(l.weight.clone()),
            })
        };
        Self::build(file.path(), widths, acts, name, options, read)
    }

    /// The built-in MLP of `widths`: the weights [`DenseMlp`](crate::DenseMlp)
    /// draws from `seed` (GELU between layers, none after the last), packed
    /// for `options.precision` into memory placed as `options.placement`
    /// says, like a loaded model's.
    pub fn generated(widths: &[usize], seed: u64, options: LoadOptions) -> Result<Self, LoadError> {
        let origin = Path::new("built-in mlp");
        if widths.len() < 2 || widths.contains(&0) {
            return Err(LoadError::new(
                origin,
                None,
                LoadErrorKind::Config(format!(
                    "an MLP needs at least two non-zero widths, got {widths:?}"
                )),
            ));
        }
        let layers = widths.len() - 1;
        let acts = (0..layers)
            .map(|i| {
                if i + 1 < layers {
                    Activation::GeluErf
                } else {
                    Activation::None
                }
            })
            .collect();
        let name = default_name(widths, &options);
        // `build` asks for layers 0, 1, ... in order, once per copy: each
        // copy draws them all again from the start.
        let mut drawn = generated_layers(widths, seed);
        Self::build(origin, widths.to_vec(), acts, name, options, |idx| {
            if idx == 0 {
                drawn = generated_layers(widths, seed);
            }
            let layer = drawn.next();
            let (weight, bias) = layer.expect("one drawn layer per width pair");
            Ok(LayerTensors {
                weight,
                out_major: false,
                bias: Some(bias),
                label: None,
            })
        })
    }

    /// Packs the layers `tensors(0..)` give into one store per copy that
    /// `options.placement` asks for; each copy asks for layers 0, 1, ...
    /// in order (`generated` relies on it).
    fn build(
        origin: &Path,
        widths: Vec<usize>,
        acts: Vec<Activation>,
        name: String,
        options: LoadOptions,
        mut tensors: impl FnMut(usize) -> Result<LayerTensors, LoadError>,
    ) -> Result<Self, LoadError> {
        let bytes: usize = widths
            .windows(2)
            .map(|p| {
                matrix_bytes(p[0], p[1], options.precision, &options.paths) + vector_bytes(p[1])
            })
            .sum();
        let at = |label: &Option<String>, kind| LoadError::new(origin, label.as_deref(), kind);
        let copies = options.placement.copies().map_err(|k| at(&None, k))?;
        let mut replicas = Vec::with_capacity(copies.len());
        for (policy, _) in &copies {
            let mut store = NodeStore::new(bytes, policy).map_err(|k| at(&None, k))?;
            let mut layers = Vec::with_capacity(acts.len());
            for (idx, &activation) in acts.iter().enumerate() {
                let (inp, out) = (widths[idx], widths[idx + 1]);
                let t = tensors(idx)?;
                let view = if t.out_major {
                    MatRef::new(&t.weight, out, inp, inp).map(|v| v.t())
                } else {
                    MatRef::new(&t.weight, inp, out, out)
                }
                .map_err(|e| at(&t.label, LoadErrorKind::Gemm(e)))?;
                // SAFETY: the layers go into a `Replica` beside `store`,
                // which drops them first (Replica's invariant).
                let weights = unsafe { store.matrix(view, options.precision, &options.paths) }
                    .map_err(|k| at(&t.label, k))?;
                let bias = match &t.bias {
                    // SAFETY: as above.
                    Some(b) => Some(unsafe { store.vector(b) }.map_err(|k| at(&t.label, k))?),
                    None => None,
                };
                layers.push(Layer {
                    weights,
                    bias,
                    activation,
                });
            }
            replicas.push(Replica { layers, store });
        }
        let copy_nodes: Vec<Option<usize>> = copies.iter().map(|c| c.1).collect();
        let threads = super::team::threads_or_env(options.threads);
        let team = ModelTeam::new(threads, options.cpus.as_ref())
            .map_err(|e| at(&None, LoadErrorKind::Io(e)))?;
        Ok(Self {
            widths,
            copy_of_cpu: store::copy_index_by_cpu(&copy_nodes),
            replicas,
            options,
            name,
            team,
        })
    }

    pub fn widths(&self) -> &[usize] {
        &self.widths
    }
    /// For each copy of the weights, the nodes of its first and last page
    /// (to check a placement took effect).
    pub fn weight_nodes(&self) -> Vec<(Option<usize>, Option<usize>)> {
        self.replicas.iter().map(|r| r.store.nodes()).collect()
    }
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    fn widest(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(0)
    }
}

impl Model for Mlp {
    fn name(&self) -> &str {
        &self.name
    }
    fn input_len(&self) -> usize {
        self.widths[0]
    }
    fn output_len(&self) -> usize {
        self.widths[self.widths.len() - 1]
    }

    fn scratch_size(&self, max_batch: usize) -> ScratchSize {
        let m = max_batch.max(1);
        let bytes = self.replicas.first().map_or(0, |r| {
            r.layers
                .iter()
                .map(|l| {
                    l.weights
                        .scratch_bytes(m, self.team.threads(), &self.options.paths)
                })
                .max()
                .unwrap_or(0)
        });
        ScratchSize {
            floats: 2 * m * self.widest(),
            bytes,
        }
    }

    fn run(
        &self,
        batch: usize,
        inputs: &[f32],
        outputs: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        let need = self.scratch_size(batch);
        let (floats, bytes) = scratch.parts();
        if floats.len() < need.floats || bytes.len() < need.bytes {
            return Err(ModelError::Scratch {
                what: "mlp floats or bytes",
                needed: need.floats.max(need.bytes),
                got: floats.len().min(bytes.len()),
            });
        }
        let (n_in, n_out) = (self.input_len(), self.output_len());
        if inputs.len() < batch * n_in || outputs.len() < batch * n_out {
            return Err(ModelError::Shape(format!(
                "batch {batch}: {} inputs, {} outputs",
                inputs.len(),
                outputs.len()
            )));
        }
        let copy = store::current_copy(&self.copy_of_cpu).min(self.replicas.len() - 1);
        let layers = &self.replicas[copy].layers;
        let half = batch * self.widest();
        let (ping, rest) = floats.split_at_mut(half);
        let pong = &mut rest[..half];
        let lease = self.team.enter();
        let team = lease.team();
        run_layer_chain(
            &self.widths,
            batch,
            inputs,
            outputs,
            (ping, pong),
            |i, a, c| {
                let layer = &layers[i];
                let mut epilogue = Epilogue::new().activation(layer.activation);
                if let Some(b) = layer.bias {
                    epilogue = epilogue.bias(b);
                }
                let paths = &self.options.paths;
                layer
                    .weights
                    .gemm(team, paths, 1.0, a, 0.0, c, &epilogue, bytes)?;
                Ok(())
            },
        )?;
        lease.finish(batch);
        Ok(())
    }
}
