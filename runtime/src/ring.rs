//! Bounded multi-producer multi-consumer ring of request-slot indices.
//!
//! Dmitry Vyukov's bounded MPMC queue: every cell carries a sequence number
//! that says whose turn it is, so producers and consumers claim positions
//! with one compare-and-swap each and never wait for one another except on a
//! full or empty ring.
//!
//! The payload is a `u32` (an index into the partition's request slots),
//! packed with the cell's 32-bit sequence number into one atomic word:
//! release on publish, acquire on consume, and the ring needs no `unsafe`.

use crate::sync::{spin_hint, AtomicU64, AtomicUsize, CachePadded, Ordering};

/// One position of the ring: its sequence number (high 32 bits) and value
/// (low 32 bits) in one word, so a producer publishes both with a single
/// store and a consumer reads both with a single load (no window in which a
/// polling consumer can steal the line between two stores). Alone on its
/// cache line so that a producer filling cell `i + 1` does not take the line
/// a consumer is releasing cell `i` on.
///
/// Invariant, for the position `pos` that maps to this cell (sequence
/// numbers compared modulo 2^32, capacity <= 2^30):
/// `seq == pos` free for the producer of `pos`;
/// `seq == pos + 1` holds the value pushed at `pos`;
/// `seq == pos + capacity` consumed, free for the producer of `pos + capacity`.
#[repr(align(64))]
struct Cell {
    word: AtomicU64,
}

#[inline(always)]
fn pack(seq: usize, value: u32) -> u64 {
    ((seq as u32 as u64) << 32) | u64::from(value)
}

#[inline(always)]
fn seq_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// The ring was full; the value is handed back untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full(pub u32);

/// A bounded MPMC queue of `u32`.
///
/// Invariant: `head <= tail <= head + capacity` (positions are counters that
/// wrap at `usize::MAX`, compared by signed difference).
pub struct Ring {
    /// Next position a producer will claim; written only by producers.
    tail: CachePadded<AtomicUsize>,
    /// Next position a consumer will claim; written only by consumers.
    head: CachePadded<AtomicUsize>,
    cells: Box<[Cell]>,
    mask: usize,
}

impl Ring {
    /// A ring holding at least `capacity` values (rounded up to a power of
    /// two, at least 2, at most 2^30).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.clamp(2, 1 << 30).next_power_of_two();
        let cells = (0..capacity)
            .map(|i| Cell {
                word: AtomicU64::new(pack(i, 0)),
            })
            .collect();
        Self {
            tail: CachePadded(AtomicUsize::new(0)),
            head: CachePadded(AtomicUsize::new(0)),
            cells,
            mask: capacity - 1,
        }
    }

    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Appends `value`, or returns it in `Full` at once when every cell is
    /// taken (backpressure: nothing blocks, nothing is dropped).
    #[inline]
    pub fn try_push(&self, value: u32) -> Result<(), Full> {
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let seq = seq_of(cell.word.load(Ordering::Acquire));
            let lag = seq.wrapping_sub(pos as u32) as i32;
            if lag == 0 {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // Publishes `value` to the consumer that acquires it.
                        cell.word
                            .store(pack(pos.wrapping_add(1), value), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if lag < 0 {
                // The cell still holds the value pushed one lap ago.
                return Err(Full(value));
            } else {
                // Another producer claimed `pos` first; catch up.
                spin_hint();
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest value, or `None` when the ring is empty.
    #[inline]
    pub fn try_pop(&self) -> Option<u32> {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let word = cell.word.load(Ordering::Acquire);
            let lag = seq_of(word).wrapping_sub(pos.wrapping_add(1) as u32) as i32;
            if lag == 0 {
                match self.head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // Hands the cell to the producer one lap ahead.
                        cell.word
                            .store(pack(pos.wrapping_add(self.mask + 1), 0), Ordering::Release);
                        return Some(word as u32);
                    }
                    Err(now) => pos = now,
                }
            } else if lag < 0 {
                return None;
            } else {
                spin_hint();
                pos = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// True when a value is published at the head (a hint: it may be taken
    /// by another consumer the next moment).
    #[inline]
    pub fn has_ready(&self) -> bool {
        let pos = self.head.load(Ordering::Relaxed);
        let word = self.cells[pos & self.mask].word.load(Ordering::Acquire);
        seq_of(word) == pos.wrapping_add(1) as u32
    }

    /// Values pushed and not yet popped, as seen at one instant (a hint).
    pub fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.capacity())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_and_full_and_empty() {
        let ring = Ring::with_capacity(3);
        assert_eq!(ring.capacity(), 4);
        assert_eq!(ring.try_pop(), None);
        for v in 0..4 {
            ring.try_push(v).unwrap();
        }
        assert_eq!(ring.try_push(9), Err(Full(9)));
        assert_eq!(ring.len(), 4);
        for v in 0..4 {
            assert_eq!(ring.try_pop(), Some(v));
        }
        assert_eq!(ring.try_pop(), None);
        // Many laps keep the order.
        for v in 0..1000 {
            ring.try_push(v).unwrap();
            assert!(ring.has_ready());
            assert_eq!(ring.try_pop(), Some(v));
        }
        assert!(ring.is_empty());
    }

    #[test]
    fn many_producers_many_consumers_each_value_once() {
        const PER_PRODUCER: u32 = 20_000;
        const PRODUCERS: u32 = 3;
        let ring = Arc::new(Ring::with_capacity(64));
        let seen: Arc<Vec<std::sync::atomic::AtomicU32>> = Arc::new(
            (0..PER_PRODUCER * PRODUCERS)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        );
        let taken = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut threads = Vec::new();
        for p in 0..PRODUCERS {
            let ring = ring.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let mut v = p * PER_PRODUCER + i;
                    while let Err(Full(back)) = ring.try_push(v) {
                        v = back;
                        std::thread::yield_now();
                    }
                }
            }));
        }
        for _ in 0..2 {
            let (ring, seen, taken) = (ring.clone(), seen.clone(), taken.clone());
            threads.push(std::thread::spawn(move || {
                while taken.load(std::sync::atomic::Ordering::Relaxed) < PER_PRODUCER * PRODUCERS {
                    match ring.try_pop() {
                        Some(v) => {
                            seen[v as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        None => std::thread::yield_now(),
                    }
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert!(seen
            .iter()
            .all(|c| c.load(std::sync::atomic::Ordering::Relaxed) == 1));
        assert!(ring.is_empty());
    }
}

/// Model checks of the publish/consume protocol: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p pinned-runtime --release --lib ring`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Preemption bound 3: loom's documentation notes most bugs need at
    /// most 2-3 preemptions, and it keeps the run to seconds.
    fn bounded() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b
    }

    /// Two producers, one consumer, a ring of two cells: every value comes
    /// out exactly once, and a value read is the value written.
    #[test]
    fn two_producers_one_consumer() {
        bounded().check(|| {
            let ring = Arc::new(Ring::with_capacity(2));
            let producers: Vec<_> = [10u32, 20]
                .into_iter()
                .map(|v| {
                    let ring = ring.clone();
                    thread::spawn(move || {
                        while ring.try_push(v).is_err() {
                            thread::yield_now();
                        }
                    })
                })
                .collect();
            let mut got = Vec::new();
            while got.len() < 2 {
                match ring.try_pop() {
                    Some(v) => got.push(v),
                    None => thread::yield_now(),
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            got.sort_unstable();
            assert_eq!(got, vec![10, 20]);
            assert_eq!(ring.try_pop(), None);
        });
    }

    /// One producer wrapping a two-cell ring and draining it when full while
    /// a consumer races it: cell reuse across laps never loses or duplicates
    /// a value.
    #[test]
    fn wraparound_with_racing_consumer() {
        bounded().check(|| {
            let ring = Arc::new(Ring::with_capacity(2));
            let total = Arc::new(AtomicUsize::new(0));
            let consumers: Vec<_> = (0..1)
                .map(|_| {
                    let (ring, total) = (ring.clone(), total.clone());
                    thread::spawn(move || {
                        let mut mine = 0u32;
                        for _ in 0..2 {
                            if let Some(v) = ring.try_pop() {
                                mine += v;
                                total.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        mine
                    })
                })
                .collect();
            let mut sum = 0u32;
            for v in [1u32, 2, 4] {
                // On a full ring the producer drains one itself, so the model
                // never waits on a consumer that has already given up.
                while ring.try_push(v).is_err() {
                    match ring.try_pop() {
                        Some(got) => {
                            sum += got;
                            total.fetch_add(1, Ordering::Relaxed);
                        }
                        // The consumer holds the cell mid-release.
                        None => thread::yield_now(),
                    }
                }
            }
            sum += consumers
                .into_iter()
                .map(|c| c.join().unwrap())
                .sum::<u32>();
            while let Some(v) = ring.try_pop() {
                sum += v;
                total.fetch_add(1, Ordering::Relaxed);
            }
            assert_eq!(total.load(Ordering::Relaxed), 3);
            assert_eq!(sum, 7);
        });
    }
}
