//! Model-based property tests: random sequences of arena and pool
//! operations applied to the real structures and to a plain model,
//! compared after every step.
//!
//! Checked each step: the arena puts every allocation exactly where the
//! model says (so allocations are aligned, inside the region and never
//! overlap), exhaustion happens at the model's byte, `reset_to`/`reset`
//! give back exactly what the model frees, and the bytes of every live
//! allocation and held block are still what was written into them.

use pinned_allocator::{Arena, ArenaError, Block, Mark, MemPolicy, Pool};
use proptest::prelude::*;

const ARENA_BYTES: usize = 4 * 4096;
const BLOCKS: usize = 6;
const BLOCK_BYTES: usize = 40;

#[derive(Clone, Debug)]
enum Op {
    Alloc { bytes: usize, align_log2: u32 },
    AllocU64 { n: usize },
    Mark,
    ResetTo { mark: usize },
    Reset,
    Take,
    Give { held: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..1500, 0u32..=12).prop_map(|(bytes, align_log2)| Op::Alloc { bytes, align_log2 }),
        3 => (0usize..200).prop_map(|n| Op::AllocU64 { n }),
        2 => Just(Op::Mark),
        2 => any::<prop::sample::Index>().prop_map(|i| Op::ResetTo { mark: i.index(usize::MAX) }),
        1 => Just(Op::Reset),
        3 => Just(Op::Take),
        3 => any::<prop::sample::Index>().prop_map(|i| Op::Give { held: i.index(usize::MAX) }),
    ]
}

/// A live allocation in the model: offset, length, the byte written into it.
#[derive(Clone, Copy, Debug)]
struct Live {
    start: usize,
    len: usize,
    byte: u8,
}

#[derive(Default)]
struct Model {
    used: usize,
    live: Vec<Live>,
    marks: Vec<(Mark, usize)>,
    held: Vec<usize>,
}

impl Model {
    /// Where an allocation must land, or the exact exhaustion error.
    fn alloc(&self, bytes: usize, align: usize) -> Result<usize, ArenaError> {
        let start = self.used.next_multiple_of(align);
        if start + bytes > ARENA_BYTES {
            return Err(ArenaError::Exhausted {
                requested: bytes,
                align,
                used: self.used,
                capacity: ARENA_BYTES,
            });
        }
        Ok(start)
    }

    /// A reset frees every byte above `offset`, including the tail of an
    /// allocation made after an earlier, deeper reset (its borrow ended
    /// with the `&mut` reset, so it is dead either way).
    fn free_from(&mut self, offset: usize) {
        self.used = offset;
        self.live.retain(|l| l.start + l.len <= offset);
    }
}

fn check_alloc(
    arena: &Arena,
    model: &mut Model,
    got: Result<*mut u8, ArenaError>,
    bytes: usize,
    align: usize,
    byte: u8,
) -> Result<(), TestCaseError> {
    let base = arena.region().as_ptr() as usize;
    match (model.alloc(bytes, align), got) {
        (Ok(start), Ok(ptr)) => {
            prop_assert_eq!(ptr as usize, base + start, "placed where the model says");
            prop_assert_eq!(ptr as usize % align, 0);
            prop_assert!(start + bytes <= arena.capacity());
            for l in &model.live {
                let disjoint = start + bytes <= l.start || l.start + l.len <= start;
                prop_assert!(bytes == 0 || disjoint, "overlaps {:?}", l);
            }
            model.used = start + bytes;
            if bytes > 0 {
                model.live.push(Live {
                    start,
                    len: bytes,
                    byte,
                });
            }
        }
        (Err(want), Err(got)) => prop_assert_eq!(want, got),
        (want, got) => prop_assert!(
            false,
            "model {:?}, arena {:?}",
            want,
            got.map(|p| p as usize)
        ),
    }
    prop_assert_eq!(arena.used(), model.used);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut arena = Arena::new(ARENA_BYTES, MemPolicy::Local).unwrap();
    prop_assert_eq!(arena.capacity(), ARENA_BYTES);
    let pool = Pool::new(BLOCK_BYTES, BLOCKS, 8, MemPolicy::Local).unwrap();
    let mut blocks: Vec<Block<'_>> = Vec::new();
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        let byte = (step % 251) as u8 + 1;
        match op {
            Op::Alloc { bytes, align_log2 } => {
                let align = 1 << align_log2;
                let got = arena
                    .alloc_aligned::<u8>(bytes, align, byte)
                    .map(|s| s.as_mut_ptr());
                check_alloc(&arena, &mut model, got, bytes, align, byte)?;
            }
            Op::AllocU64 { n } => {
                let fill = u64::from_ne_bytes([byte; 8]);
                let got = arena.alloc::<u64>(n, fill).map(|s| s.as_mut_ptr().cast());
                check_alloc(&arena, &mut model, got, n * 8, 8, byte)?;
            }
            Op::Mark => model.marks.push((arena.mark(), model.used)),
            Op::ResetTo { mark } if !model.marks.is_empty() => {
                let (m, offset) = model.marks[mark % model.marks.len()];
                let got = arena.try_reset_to(m);
                if offset <= model.used {
                    prop_assert_eq!(got, Ok(()));
                    model.free_from(offset);
                } else {
                    let stale = ArenaError::StaleMark {
                        mark: offset,
                        used: model.used,
                    };
                    prop_assert_eq!(got, Err(stale));
                }
            }
            Op::ResetTo { .. } => {}
            Op::Reset => {
                arena.reset();
                model.free_from(0);
            }
            Op::Take => match pool.take() {
                Some(mut b) => {
                    prop_assert!(model.held.len() < BLOCKS);
                    prop_assert!(!model.held.contains(&b.index()), "handed out twice");
                    let tag = b.index() as u8 + 1;
                    b.as_mut_slice().fill(tag);
                    model.held.push(b.index());
                    blocks.push(b);
                }
                None => prop_assert_eq!(model.held.len(), BLOCKS),
            },
            Op::Give { held } if !blocks.is_empty() => {
                let b = blocks.swap_remove(held % blocks.len());
                model.held.retain(|&i| i != b.index());
                pool.give(b);
            }
            Op::Give { .. } => {}
        }
        prop_assert_eq!(arena.used(), model.used);
        let bytes = arena.region().as_slice();
        for l in &model.live {
            prop_assert!(
                bytes[l.start..l.start + l.len].iter().all(|&b| b == l.byte),
                "allocation {:?} was overwritten",
                l
            );
        }
        for b in &blocks {
            prop_assert!(b.as_slice().iter().all(|&x| x == b.index() as u8 + 1));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn arena_and_pool_follow_the_model(ops in prop::collection::vec(op(), 1..250)) {
        run(ops)?;
    }
}
