//! Where loaded weights live: one node-placed mapping per copy, carved
//! into packed matrices and f32 vectors, and the placement options that
//! decide how many copies and on which nodes.

use pinned_allocator::{IdList, MemPolicy, Topology};
use pinned_kernels::gemm::{GemmError, MatRef, PackedB};
use pinned_kernels::lowp::{Elem, PackedLowp};
use pinned_kernels::precision::{KernelPaths, PackedWeights, Precision};

use super::safetensors_load::LoadErrorKind;
use crate::memory::NodeBuffer;
use crate::partition::Placement;

/// Alignment of every carved piece: a cache line (and the packers' 64).
const ALIGN: usize = 64;

/// How a model's weights are placed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum WeightPlacement {
    /// Default policy: wherever the loading thread's first touch puts them.
    #[default]
    Os,
    /// Bound to one node (the partition's).
    Node(usize),
    /// Page-interleaved over these nodes (one copy).
    Interleave(IdList),
    /// One copy bound to each of these nodes; a worker reads its node's.
    Replicate(IdList),
}

impl WeightPlacement {
    /// `os`, `node:1`, `interleave:0-1`, `replicate:0,1`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, arg) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
        let list = || IdList::parse(arg).ok().filter(|l| !l.is_empty());
        match kind {
            "os" if arg.is_empty() => Some(Self::Os),
            "node" => arg.trim().parse().ok().map(Self::Node),
            "interleave" => list().map(Self::Interleave),
            "replicate" => list().map(Self::Replicate),
            _ => None,
        }
    }

    /// The weights' placement for a partition placed as `placement` whose
    /// CPUs are on `nodes`: local binds to the node (replicates over
    /// several), interleave and replicate carry over, `os` stays `os`.
    pub fn for_partition(placement: &Placement, nodes: &IdList) -> Self {
        let one_or_each = |nodes: &IdList| match nodes.as_slice() {
            [only] => Self::Node(*only),
            [] => Self::Os,
            _ => Self::Replicate(nodes.clone()),
        };
        match placement {
            Placement::Os => Self::Os,
            Placement::Local | Placement::Replicate => one_or_each(nodes),
            Placement::Bind(list) => one_or_each(list),
            Placement::Preferred(node) => Self::Node(*node),
            Placement::Interleave(list) => Self::Interleave(list.clone()),
        }
    }

    /// One memory policy per copy, with the node each copy serves
    /// (`None`: any node).
    pub(crate) fn copies(&self) -> Result<Vec<(MemPolicy, Option<usize>)>, LoadErrorKind> {
        let policy_err = |e| LoadErrorKind::Config(format!("placement {self:?}: {e}"));
        Ok(match self {
            Self::Os => vec![(MemPolicy::Default, None)],
            Self::Node(n) => vec![(
                MemPolicy::bind(&IdList::from_ids(vec![*n])).map_err(policy_err)?,
                Some(*n),
            )],
            Self::Interleave(list) => {
                vec![(MemPolicy::interleave(list).map_err(policy_err)?, None)]
            }
            Self::Replicate(list) => list
                .iter()
                .map(|n| {
                    Ok((
                        MemPolicy::bind(&IdList::from_ids(vec![n])).map_err(policy_err)?,
                        Some(n),
                    ))
                })
                .collect::<Result<_, LoadErrorKind>>()?,
        })
    }
}

impl std::fmt::Display for WeightPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Os => f.write_str("os"),
            Self::Node(n) => write!(f, "node:{n}"),
            Self::Interleave(l) => write!(f, "interleave:{}", join(l)),
            Self::Replicate(l) => write!(f, "replicate:{}", join(l)),
        }
    }
}

fn join(list: &IdList) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Bytes a packed `k x n` matrix takes in the store.
pub(crate) fn matrix_bytes(k: usize, n: usize, precision: Precision, paths: &KernelPaths) -> usize {
    match precision {
        Precision::F32 => PackedB::bytes_needed(k, n, paths.f32),
        Precision::Bf16 => PackedLowp::bytes_needed(Elem::Bf16, k, n),
        Precision::Int8 => PackedLowp::bytes_needed(Elem::Int8, k, n),
    }
    .next_multiple_of(ALIGN)
}

/// Bytes `len` f32 values take in the store.
pub(crate) fn vector_bytes(len: usize) -> usize {
    (len * 4).next_multiple_of(ALIGN)
}

/// One copy's memory: a node-placed mapping carved front to back.
///
/// Invariant: `used <= buf.len()`; bytes `[0, used)` are handed out (each
/// piece once), `[used, len)` are untouched.
pub(crate) struct NodeStore {
    buf: NodeBuffer<u8>,
    used: usize,
}

impl NodeStore {
    /// Maps `bytes` with `policy` and faults them in from this thread (the
    /// policy, not this thread's node, decides where they land).
    pub(crate) fn new(bytes: usize, policy: &MemPolicy) -> Result<Self, LoadErrorKind> {
        Ok(Self {
            buf: NodeBuffer::new(bytes, policy, "model weights")?,
            used: 0,
        })
    }

    /// The next `bytes` (rounded up to [`ALIGN`]), exclusively and for as
    /// long as the store lives.
    ///
    /// # Safety
    /// The returned slice must be dropped before `self` is: the memory is
    /// unmapped when the store drops.
    unsafe fn take(&mut self, bytes: usize) -> Result<&'static mut [u8], LoadErrorKind> {
        let bytes = bytes.next_multiple_of(ALIGN);
        let end = self
            .used
            .checked_add(bytes)
            .filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(LoadErrorKind::Config(format!(
                "weight store of {} bytes is too small: {} used, {bytes} more asked",
                self.buf.len(),
                self.used
            )));
        };
        // SAFETY: `[used, end)` lies inside the mapping (checked above) and
        // was never handed out (struct invariant); the mapping is
        // page-aligned and `used` a multiple of ALIGN; the caller keeps the
        // slice no longer than the store, which alone unmaps it.
        let piece =
            unsafe { std::slice::from_raw_parts_mut(self.buf.as_ptr().add(self.used), bytes) };
        self.used = end;
        Ok(piece)
    }

    /// Copies `values` in.
    ///
    /// # Safety
    /// As [`Self::take`].
    pub(crate) unsafe fn vector(
        &mut self,
        values: &[f32],
    ) -> Result<&'static [f32], LoadErrorKind> {
        // SAFETY: forwarded to our caller.
        let piece = unsafe { self.take(vector_bytes(values.len()))? };
        // SAFETY: the piece is ALIGN-aligned, so the prefix is empty; every
        // bit pattern is a valid f32.
        let (_, floats, _) = unsafe { piece.align_to_mut::<f32>() };
        let floats = &mut floats[..values.len()];
        floats.copy_from_slice(values);
        Ok(floats)
    }

    /// Converts and packs the `k x n` view `b` for `precision`.
    ///
    /// # Safety
    /// As [`Self::take`].
    pub(crate) unsafe fn matrix(
        &mut self,
        b: MatRef<'_>,
        precision: Precision,
        paths: &KernelPaths,
    ) -> Result<PackedWeights<'static>, LoadErrorKind> {
        let bytes = matrix_bytes(b.rows(), b.cols(), precision, paths);
        // SAFETY: forwarded to our caller.
        let mem = unsafe { self.take(bytes)? };
        let packed: Result<_, GemmError> = match precision {
            Precision::F32 => PackedB::pack_view_into(b, paths.f32, mem).map(|mut w| {
                w.set_cold(self.weights_outgrow_l2());
                PackedWeights::F32(w)
            }),
            Precision::Bf16 => PackedLowp::pack_into(b, Elem::Bf16, mem).map(PackedWeights::Bf16),
            Precision::Int8 => PackedLowp::pack_into(b, Elem::Int8, mem).map(PackedWeights::Int8),
        };
        Ok(packed?)
    }

    /// Whether the whole model outgrows L2: then a request finds each
    /// layer's weights evicted by the others', in L3 or memory, and the
    /// GEMM should fetch them ahead (see `PackedB::set_cold`).
    fn weights_outgrow_l2(&self) -> bool {
        let l2 = pinned_kernels::cache_sizes().l2.unwrap_or(256 << 10);
        self.buf.len() > l2
    }

    pub(crate) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The node holding the first and the last page of the store (where
    /// the policy put them), `None` where the kernel does not say.
    pub(crate) fn nodes(&self) -> (Option<usize>, Option<usize>) {
        let first = self.buf.as_ptr().cast_const();
        let last = first.wrapping_add(self.buf.len().saturating_sub(1));
        let node = |p| pinned_allocator::numa::node_of_address(p).ok().flatten();
        (node(first), node(last))
    }
}

/// Which copy each CPU reads: `copy_of_cpu[cpu]`, 0 when unknown.
pub(crate) fn copy_index_by_cpu(copy_nodes: &[Option<usize>]) -> Vec<u8> {
    if copy_nodes.len() <= 1 {
        return Vec::new();
    }
    let Ok(topo) = Topology::detect() else {
        return Vec::new();
    };
    let max_cpu = topo.online_cpus.max().unwrap_or(0);
    (0..=max_cpu)
        .map(|cpu| {
            let node = topo.node_of_cpu(cpu);
            copy_nodes
                .iter()
                .position(|c| c.is_some() && *c == node)
                .unwrap_or(0) as u8
        })
        .collect()
}

/// The copy the calling thread should read: its CPU's node's copy.
pub(crate) fn current_copy(copy_of_cpu: &[u8]) -> usize {
    if copy_of_cpu.is_empty() {
        return 0;
    }
    crate::affinity::current_cpu()
        .and_then(|cpu| copy_of_cpu.get(cpu))
        .map_or(0, |&c| usize::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_parse_and_follow_partitions() {
        assert_eq!(WeightPlacement::parse("os"), Some(WeightPlacement::Os));
        assert_eq!(
            WeightPlacement::parse("node:0"),
            Some(WeightPlacement::Node(0))
        );
        let both = IdList::parse("0-1").unwrap();
        assert_eq!(
            WeightPlacement::parse("replicate:0-1"),
            Some(WeightPlacement::Replicate(both.clone()))
        );
        assert_eq!(WeightPlacement::parse("interleave:"), None);
        assert_eq!(WeightPlacement::parse("nodes:1"), None);
        let one = IdList::from_ids(vec![0]);
        assert_eq!(
            WeightPlacement::for_partition(&Placement::Local, &one),
            WeightPlacement::Node(0)
        );
        assert_eq!(
            WeightPlacement::for_partition(&Placement::Local, &both),
            WeightPlacement::Replicate(both.clone())
        );
        assert_eq!(
            WeightPlacement::Replicate(both).to_string(),
            "replicate:0,1"
        );
    }

    #[test]
    fn the_store_hands_out_aligned_pieces_and_refuses_overflow() {
        let mut store = NodeStore::new(256, &MemPolicy::Default).unwrap();
        // SAFETY: the pieces are dropped at the end of this test, before `store`.
        let a = unsafe { store.vector(&[1.0, 2.0, 3.0]) }.unwrap();
        assert_eq!(a, [1.0, 2.0, 3.0]);
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        // SAFETY: as above.
        let b = unsafe { store.vector(&[4.0; 60]) };
        assert!(matches!(b, Err(LoadErrorKind::Config(_))));
        assert_eq!(a[2], 3.0);
    }

    /// fp32 weights are marked cold (fetched ahead by the GEMM) exactly
    /// when the model's store outgrows L2.
    #[test]
    fn weights_are_cold_when_the_model_outgrows_l2() {
        let paths = KernelPaths::best();
        let l2 = pinned_kernels::cache_sizes().l2.unwrap_or(256 << 10);
        let (k, n) = (16, 40);
        let w: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        let view = MatRef::new(&w, k, n, n).unwrap();
        let one = matrix_bytes(k, n, Precision::F32, &paths);
        for (store_bytes, cold) in [(one, false), (l2 + one, true)] {
            let mut store = NodeStore::new(store_bytes, &MemPolicy::Default).unwrap();
            // SAFETY: the matrix is dropped at the end of each turn, before `store`.
            let m = unsafe { store.matrix(view, Precision::F32, &paths) }.unwrap();
            let PackedWeights::F32(packed) = &m else {
                panic!("f32 weights packed as {:?}", m.precision());
            };
            assert_eq!(
                packed.is_cold(),
                cold,
                "store of {store_bytes} bytes, L2 {l2}"
            );
        }
    }
}
