//! What a partition serves: the [`Model`] trait, its per-worker scratch, and
//! a built-in dense MLP on the fp32 GEMM so the runtime runs end to end.

use pinned_kernels::gemm::{self, BMatrix, Epilogue, GemmError, MatMut, MatRef, PackedB};
use pinned_kernels::{Isa, IsaError};

use crate::memory::{MemoryError, NodeBuffer};
use crate::models::team::{threads_or_env, ModelTeam};
use pinned_allocator::{Arena, ArenaError, IdList, MemPolicy};

/// Why a model refused or failed a batch. The request gets an error status;
/// the worker goes on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gemm(#[from] GemmError),
    #[error(transparent)]
    Isa(#[from] IsaError),
    #[error("bad model shape: {0}")]
    Shape(String),
    #[error(transparent)]
    Arena(#[from] ArenaError),
    #[error("the model needs a scratch arena (Model::arena_bytes) but has none")]
    NoArena,
    #[error("scratch too small: {needed} {what} needed, {got} given")]
    Scratch {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("could not start the model's threads: {0}")]
    Threads(std::io::Error),
}

/// Workspace a model needs for one batch of at most `max_batch` requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScratchSize {
    /// fp32 activations.
    pub floats: usize,
    /// Opaque bytes (GEMM packing workspace).
    pub bytes: usize,
}

/// A worker's scratch, mapped on its node after it pinned itself: fixed
/// parts (`parts`) sized by [`Model::scratch_size`], and an arena
/// (`Model::arena_bytes`) for activations that the worker resets after
/// every batch (one frame per batch). Nothing in it survives from one batch
/// to the next.
pub struct Scratch {
    floats: NodeBuffer<f32>,
    bytes: NodeBuffer<u8>,
    arena: Option<Arena>,
}

impl Scratch {
    pub(crate) fn new(
        size: ScratchSize,
        arena_bytes: usize,
        policy: &MemPolicy,
    ) -> Result<Self, MemoryError> {
        let arena = match arena_bytes {
            0 => None,
            n => Some(Arena::new(n, *policy).map_err(|e| MemoryError::Arena(Box::new(e)))?),
        };
        Ok(Self {
            floats: NodeBuffer::new(size.floats, policy, "scratch floats")?,
            bytes: NodeBuffer::new(size.bytes, policy, "scratch bytes")?,
            arena,
        })
    }

    /// Scratch on the OS's default placement, for running a model outside a
    /// partition (tests, reference runs); no arena.
    pub fn standalone(size: ScratchSize) -> Result<Self, MemoryError> {
        Self::new(size, 0, &MemPolicy::Default)
    }

    /// Everything `model` needs for batches of up to `max_batch`, on the
    /// OS's default placement.
    pub fn for_model(model: &dyn Model, max_batch: usize) -> Result<Self, MemoryError> {
        Self::new(
            model.scratch_size(max_batch),
            model.arena_bytes(max_batch),
            &MemPolicy::Default,
        )
    }

    /// The activation floats and the byte workspace, both exclusively.
    pub fn parts(&mut self) -> (&mut [f32], &mut [u8]) {
        (self.floats.as_mut_slice(), self.bytes.as_mut_slice())
    }

    /// The fixed parts and the frame arena together.
    pub fn parts_and_arena(&mut self) -> (&mut [f32], &mut [u8], Option<&Arena>) {
        (
            self.floats.as_mut_slice(),
            self.bytes.as_mut_slice(),
            self.arena.as_ref(),
        )
    }

    /// The frame arena, if the model asked for one.
    pub fn arena(&self) -> Option<&Arena> {
        self.arena.as_ref()
    }

    /// Ends the batch's frame: everything allocated from the arena since
    /// the last call is released at once.
    pub fn end_frame(&mut self) {
        if let Some(arena) = self.arena.as_mut() {
            arena.reset();
        }
    }

    /// Bytes in use in the arena (0 between batches).
    pub fn arena_used(&self) -> usize {
        self.arena.as_ref().map_or(0, Arena::used)
    }
}

/// A model a partition serves. `run` is called by one worker at a time per
/// scratch, possibly by several workers at once on different batches.
pub trait Model: Send + Sync {
    fn name(&self) -> &str;
    /// fp32 values of one request's input.
    fn input_len(&self) -> usize;
    /// fp32 values of one request's output.
    fn output_len(&self) -> usize;
    fn scratch_size(&self, max_batch: usize) -> ScratchSize;
    /// Bytes of frame arena for one batch of `max_batch` (reset by the
    /// worker after every batch); 0 for none.
    fn arena_bytes(&self, _max_batch: usize) -> usize {
        0
    }
    /// Runs `batch` requests: `inputs` is `batch * input_len` values
    /// row-major, `outputs` `batch * output_len`. Must not allocate.
    fn run(
        &self,
        batch: usize,
        inputs: &[f32],
        outputs: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError>;
    /// Writes a valid synthetic request into `input` (`input_len` values),
    /// for load generators that have no real data: every value 0.5 unless
    /// the model's input has structure (token ids and a mask, say).
    fn sample_input(&self, input: &mut [f32]) {
        input.fill(0.5);
    }
}

/// Runs a chain of dense layers over `batch` rows: layer `i` reads
/// `widths[i]` values a row (`inputs` for the first, else the previous
/// layer's output) and writes `widths[i + 1]` (`outputs` for the last,
/// else the buffer of `ping_pong` the previous layer did not write; each
/// holds `batch` rows of the widest hidden layer). `layer(i, a, c)` runs
/// layer `i`'s GEMM and epilogue.
pub(crate) fn run_layer_chain(
    widths: &[usize],
    batch: usize,
    inputs: &[f32],
    outputs: &mut [f32],
    ping_pong: (&mut [f32], &mut [f32]),
    mut layer: impl FnMut(usize, MatRef<'_>, MatMut<'_>) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let (mut ping, mut pong) = ping_pong;
    let last = widths.len().saturating_sub(2);
    for (i, pair) in widths.windows(2).enumerate() {
        let (k, n) = (pair[0], pair[1]);
        let a = if i == 0 { inputs } else { &*ping };
        let c = if i == last { &mut *outputs } else { &mut *pong };
        layer(
            i,
            MatRef::new(a, batch, k, k)?,
            MatMut::new(c, batch, n, n)?,
        )?;
        std::mem::swap(&mut ping, &mut pong);
    }
    Ok(())
}

/// The layer widths a model spec names: `mlp` ([`DEFAULT_MLP`]) or
/// `mlp:WxWx..` (say `mlp:256x1024x256`); `None` for any other spec.
pub fn mlp_spec_widths(spec: &str) -> Option<Result<Vec<usize>, ModelError>> {
    if spec == "mlp" {
        return Some(Ok(DEFAULT_MLP.to_vec()));
    }
    let widths = spec.strip_prefix("mlp:")?;
    let parsed = widths.split('x').map(|w| w.trim().parse::<usize>());
    Some(
        parsed
            .collect::<Result<_, _>>()
            .map_err(|_| ModelError::Shape(format!("'{spec}' is not mlp:WIDTHxWIDTHx..."))),
    )
}

/// The default layer widths: 1024 -> 4096 -> 1024 -> 4096 -> 1024 with GELU
/// between layers (the model issue's reference MLP).
pub const DEFAULT_MLP: [usize; 5] = [1024, 4096, 1024, 4096, 1024];

struct Layer {
    weights: PackedB<'static>,
    bias: Vec<f32>,
    /// Raw weights kept for the scalar reference (`k x n`, row-major).
    plain: Vec<f32>,
}

/// A dense MLP: `y = W_L(...gelu(W_1 x + b_1)...) + b_L`, GELU (erf) after
/// every layer but the last, fp32 weights packed once at load onto the
/// heap, with a scalar [`DenseMlp::reference`]. What `pinned run` serves
/// is [`Mlp::generated`](crate::models::Mlp::generated): the same weights
/// in node-placed memory, in any precision. With
/// [`DenseMlp::with_team`], a batch alone in flight runs its GEMMs on a
/// team of threads, as the MiniLM and manifest models do.
pub struct DenseMlp {
    widths: Vec<usize>,
    layers: Vec<Layer>,
    isa: Isa,
    name: String,
    team: ModelTeam,
}

impl DenseMlp {
    /// An MLP with these widths (input, hidden..., output) and deterministic
    /// weights from `seed`; the GEMM kernel is `PINNED_ISA` or the best here.
    pub fn new(widths: &[usize], seed: u64) -> Result<Self, ModelError> {
        Self::with_isa(widths, seed, Isa::from_env()?)
    }

    pub fn with_isa(widths: &[usize], seed: u64, isa: Isa) -> Result<Self, ModelError> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(ModelError::Shape(format!(
                "an MLP needs at least two non-zero widths, got {widths:?}"
            )));
        }
        let mut layers = Vec::new();
        for (pair, (plain, bias)) in widths.windows(2).zip(generated_layers(widths, seed)) {
            let (k, n) = (pair[0], pair[1]);
            let weights = PackedB::new(&plain, n, k, n, isa)?;
            layers.push(Layer {
                weights,
                bias,
                plain,
            });
        }
        let name = format!(
            "dense-mlp-{}",
            widths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("-")
        );
        Ok(Self {
            widths: widths.to_vec(),
            layers,
            isa,
            name,
            team: ModelTeam::new(1, None).map_err(ModelError::Threads)?,
        })
    }

    /// Lets a batch alone in flight use `threads` threads (the caller's
    /// included; `PINNED_MODEL_THREADS` overrides it), their helpers
    /// pinned to `cpus` when given (the partition's CPUs).
    pub fn with_team(mut self, threads: usize, cpus: Option<&IdList>) -> Result<Self, ModelError> {
        self.team = ModelTeam::new(threads_or_env(threads), cpus).map_err(ModelError::Threads)?;
        Ok(self)
    }

    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    fn hidden_max(&self) -> usize {
        let inner = &self.widths[1..self.widths.len() - 1];
        inner.iter().copied().max().unwrap_or(0)
    }

    /// Straightforward scalar evaluation of one input, for tests.
    pub fn reference(&self, input: &[f32]) -> Vec<f32> {
        let mut x = input.to_vec();
        for (i, layer) in self.layers.iter().enumerate() {
            let (k, n) = (self.widths[i], self.widths[i + 1]);
            let mut y = layer.bias.clone();
            for (kk, &xv) in x.iter().enumerate().take(k) {
                for (j, yv) in y.iter_mut().enumerate() {
                    *yv += xv * layer.plain[kk * n + j];
                }
            }
            if i + 1 < self.layers.len() {
                y.iter_mut().for_each(|v| *v = gelu_erf(*v));
            }
            x = y;
        }
        x
    }
}

impl Model for DenseMlp {
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
        let gemm_bytes = self
            .widths
            .windows(2)
            .map(|p| {
                gemm::gemm_scratch_bytes_parallel(m, p[1], p[0], self.isa, self.team.threads())
            })
            .max()
            .unwrap_or(0);
        ScratchSize {
            floats: 0,
            bytes: gemm_bytes,
        }
    }

    /// Two ping-pong activation buffers of the widest hidden layer, taken
    /// from the frame arena per batch (plus alignment slack).
    fn arena_bytes(&self, max_batch: usize) -> usize {
        2 * (max_batch.max(1) * self.hidden_max() * 4 + 64)
    }

    fn run(
        &self,
        batch: usize,
        inputs: &[f32],
        outputs: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        let (_, bytes, arena) = scratch.parts_and_arena();
        let half = batch * self.hidden_max();
        let (ping, pong): (&mut [f32], &mut [f32]) = if half == 0 {
            (&mut [], &mut [])
        } else {
            let arena = arena.ok_or(ModelError::NoArena)?;
            (arena.alloc(half, 0.0f32)?, arena.alloc(half, 0.0f32)?)
        };
        let last = self.layers.len() - 1;
        let lease = self.team.enter();
        run_layer_chain(
            &self.widths,
            batch,
            inputs,
            outputs,
            (ping, pong),
            |i, a, c| {
                let layer = &self.layers[i];
                let epilogue = Epilogue::new().bias(&layer.bias);
                let epilogue = if i == last {
                    epilogue
                } else {
                    epilogue.gelu_erf()
                };
                let b = BMatrix::Packed(&layer.weights);
                gemm::sgemm_parallel(lease.team(), self.isa, 1.0, a, b, 0.0, c, &epilogue, bytes)?;
                Ok(())
            },
        )?;
        lease.finish(batch);
        Ok(())
    }
}

/// `x * Phi(x)` with the error function from Abramowitz & Stegun 7.1.26
/// (|error| < 1.5e-7), good enough for a reference at 1e-3 tolerance.
fn gelu_erf(x: f32) -> f32 {
    let z = f64::from(x) / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    let erf = if z < 0.0 { -erf } else { erf };
    (0.5 * f64::from(x) * (1.0 + erf)) as f32
}

/// SplitMix64 (Steele, Lea, Flood 2014): deterministic weights without a
/// dependency.
/// The deterministic weights of the MLP of `widths` from `seed`, layer by
/// layer: `(w, bias)`, `w` being `k x n` row-major (`[in][out]`), uniform
/// in +-1/sqrt(k) (which keeps activations O(1) through depth), the bias
/// in +-0.1. [`DenseMlp`] and the node-placed built-in
/// ([`crate::models::Mlp::generated`]) draw the same weights.
pub(crate) fn generated_layers(
    widths: &[usize],
    seed: u64,
) -> impl Iterator<Item = (Vec<f32>, Vec<f32>)> + '_ {
    let mut rng = SplitMix(seed);
    widths.windows(2).map(move |pair| {
        let (k, n) = (pair[0], pair[1]);
        let scale = 1.0 / (k as f32).sqrt();
        let plain: Vec<f32> = (0..k * n).map(|_| rng.unit() * scale).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.unit() * 0.1).collect();
        (plain, bias)
    })
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// `output[i] = input[i] * scale + shift` over `len` values: a model whose
/// answer proves which input it came from (exactly-once and ring tests,
/// the empty-request benchmark with `len = 0`).
pub struct Affine {
    pub len: usize,
    pub scale: f32,
    pub shift: f32,
}

impl Model for Affine {
    fn name(&self) -> &str {
        "affine"
    }
    fn input_len(&self) -> usize {
        self.len
    }
    fn output_len(&self) -> usize {
        self.len
    }
    fn scratch_size(&self, _max_batch: usize) -> ScratchSize {
        ScratchSize::default()
    }
    fn run(
        &self,
        batch: usize,
        inputs: &[f32],
        outputs: &mut [f32],
        _scratch: &mut Scratch,
    ) -> Result<(), ModelError> {
        let n = batch * self.len;
        for (o, i) in outputs[..n].iter_mut().zip(&inputs[..n]) {
            *o = i * self.scale + self.shift;
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn mlp_matches_scalar_reference_for_odd_batches() {
        let mlp = DenseMlp::new(&[13, 37, 7], 42).unwrap();
        assert_eq!((mlp.input_len(), mlp.output_len()), (13, 7));
        for batch in [1usize, 3, 5] {
            let mut scratch = Scratch::for_model(&mlp, batch).unwrap();
            let inputs: Vec<f32> = (0..batch * 13).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut out = vec![0.0; batch * 7];
            mlp.run(batch, &inputs, &mut out, &mut scratch).unwrap();
            for b in 0..batch {
                let want = mlp.reference(&inputs[b * 13..(b + 1) * 13]);
                for (got, want) in out[b * 7..(b + 1) * 7].iter().zip(&want) {
                    assert!((got - want).abs() < 1e-3, "batch {batch}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn mlp_on_a_team_matches_the_reference_and_the_lone_thread() {
        let alone = DenseMlp::new(&[70, 300, 33], 9).unwrap();
        let team = DenseMlp::new(&[70, 300, 33], 9)
            .unwrap()
            .with_team(3, None)
            .unwrap();
        for batch in [1usize, 2, 17] {
            let inputs: Vec<f32> = (0..batch * 70).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut want = vec![0.0; batch * 33];
            let mut scratch = Scratch::for_model(&alone, batch).unwrap();
            alone.run(batch, &inputs, &mut want, &mut scratch).unwrap();
            // The first lone batch runs alone, the next ones on the team.
            for _ in 0..3 {
                let mut got = vec![f32::NAN; batch * 33];
                let mut scratch = Scratch::for_model(&team, batch).unwrap();
                team.run(batch, &inputs, &mut got, &mut scratch).unwrap();
                assert_eq!(got, want, "batch {batch}: a team changes no bit");
            }
            let reference = team.reference(&inputs[..70]);
            for (g, w) in want.iter().zip(&reference) {
                assert!((g - w).abs() < 1e-3, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn mlp_refuses_bad_shapes_and_small_scratch() {
        assert!(matches!(DenseMlp::new(&[4], 1), Err(ModelError::Shape(_))));
        assert!(matches!(
            DenseMlp::new(&[4, 0, 2], 1),
            Err(ModelError::Shape(_))
        ));
        let mlp = DenseMlp::new(&[4, 8, 2], 1).unwrap();
        let mut small = Scratch::for_model(&mlp, 1).unwrap();
        let mut out = vec![0.0; 4];
        // An arena that is all but used up: refused with a typed error.
        let arena = small.arena().unwrap();
        arena.alloc(arena.remaining() - 16, 0u8).unwrap();
        assert!(matches!(
            mlp.run(2, &[0.0; 8], &mut out, &mut small),
            Err(ModelError::Arena(_))
        ));
        small.end_frame();
        assert_eq!(small.arena_used(), 0);
        let mut none = Scratch::standalone(mlp.scratch_size(1)).unwrap();
        assert!(matches!(
            mlp.run(1, &[0.0; 4], &mut out, &mut none),
            Err(ModelError::NoArena)
        ));
    }

    #[test]
    fn default_widths_name_the_model() {
        assert_eq!(DEFAULT_MLP, [1024, 4096, 1024, 4096, 1024]);
        let small = DenseMlp::new(&[2, 3], 7).unwrap();
        assert_eq!(small.name(), "dense-mlp-2-3");
    }

    #[test]
    fn mlp_specs_name_their_widths() {
        assert_eq!(mlp_spec_widths("mlp").unwrap().unwrap(), DEFAULT_MLP);
        assert_eq!(mlp_spec_widths("mlp:8x 16x4").unwrap().unwrap(), [8, 16, 4]);
        assert!(mlp_spec_widths("mlp:8xq").unwrap().is_err());
        assert!(mlp_spec_widths("mlp:").unwrap().is_err());
        assert!(mlp_spec_widths("minilm").is_none());
        assert!(mlp_spec_widths("mlpx").is_none());
    }
}
