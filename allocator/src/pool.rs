//! `Pool`: fixed-size blocks (request buffers) in one [`Region`], taken and
//! given back by many threads without a lock.
//!
//! Free blocks are indices in a tagged Treiber stack
//! (`FreeList`, in `src/freelist.rs`); a taken block is a [`Block`] guard that
//! owns its index, so it cannot be given back twice, and it goes back to its
//! own pool when dropped (or through [`Pool::give`]). After creation, taking
//! and giving make no syscall and touch no heap.
//!
//! ```
//! use pinned_allocator::{MemPolicy, Pool};
//! let pool = Pool::new(4096, 8, 64, MemPolicy::Local)?;
//! let mut buf = pool.take().expect("a free block");
//! buf.as_mut_slice()[0] = 1;
//! pool.give(buf);
//! # Ok::<(), pinned_allocator::PoolError>(())
//! ```

use crate::freelist::FreeList;
use crate::numa::MemPolicy;
use crate::region::{AllocError, Region, RegionOptions};

/// Why a pool could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("a pool needs blocks of at least one byte and at least one block (asked: {count} blocks of {block_size} bytes)")]
    Empty { block_size: usize, count: usize },
    #[error("{count} blocks is more than a pool can index ({max}); use fewer, larger blocks")]
    TooManyBlocks { count: usize, max: usize },
    #[error(
        "block alignment {align} is not a power of two no larger than the page size {page_size}"
    )]
    BadAlign { align: usize, page_size: usize },
    #[error("{count} blocks of {stride} bytes overflow the address space")]
    TooLarge { count: usize, stride: usize },
    #[error("pool memory: {0}")]
    Region(#[from] AllocError),
}

/// `count` blocks of `block_size` bytes, block `i` at `base + i * stride`.
///
/// Invariants: `stride = block_size` rounded up to `align`; `base` is page
/// aligned, so every block is `align`-aligned; `count * stride <= region.len()`;
/// each index is in the free list or in exactly one live `Block`.
pub struct Pool {
    free: FreeList,
    region: Region,
    block_size: usize,
    stride: usize,
}

/// A block taken from a pool; given back on drop.
///
/// Invariant: `index` is held by this guard alone (popped from the free
/// list, not yet pushed back).
pub struct Block<'p> {
    pool: &'p Pool,
    index: u32,
}

impl Pool {
    /// `count` blocks of `block_size` bytes, each aligned to `align`
    /// (a power of two up to the page size), placed by `policy`.
    pub fn new(
        block_size: usize,
        count: usize,
        align: usize,
        policy: MemPolicy,
    ) -> Result<Self, PoolError> {
        Self::with_options(block_size, count, align, RegionOptions::new(1, policy))
    }

    /// As [`new`](Self::new), with full region options (`bytes` is
    /// replaced by the size the blocks need).
    pub fn with_options(
        block_size: usize,
        count: usize,
        align: usize,
        mut options: RegionOptions,
    ) -> Result<Self, PoolError> {
        if block_size == 0 || count == 0 {
            return Err(PoolError::Empty { block_size, count });
        }
        let max = FreeList::MAX as usize;
        if count > max {
            return Err(PoolError::TooManyBlocks { count, max });
        }
        let page_size = crate::region::base_page_size();
        if !align.is_power_of_two() || align > page_size {
            return Err(PoolError::BadAlign { align, page_size });
        }
        let stride = block_size
            .checked_next_multiple_of(align)
            .ok_or(PoolError::TooLarge {
                count,
                stride: block_size,
            })?;
        options.bytes = stride
            .checked_mul(count)
            .ok_or(PoolError::TooLarge { count, stride })?;
        let region = Region::new(options)?;
        Ok(Self {
            free: FreeList::new(count as u32),
            region,
            block_size,
            stride,
        })
    }

    /// A free block, or `None` when every block is taken.
    #[inline]
    pub fn take(&self) -> Option<Block<'_>> {
        self.free.pop().map(|index| Block { pool: self, index })
    }

    /// Gives a block back to the pool it came from (the same as dropping it).
    #[inline]
    pub fn give(&self, block: Block<'_>) {
        drop(block);
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Distance between consecutive blocks (block size rounded up to the alignment).
    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn capacity(&self) -> usize {
        self.free.capacity()
    }

    /// The region holding the blocks (for `placement()`).
    pub fn region(&self) -> &Region {
        &self.region
    }

    fn block_ptr(&self, index: u32) -> *mut u8 {
        // SAFETY: index < count and count * stride <= region.len().
        unsafe { self.region.as_ptr().add(index as usize * self.stride) }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("block_size", &self.block_size)
            .field("stride", &self.stride)
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl Block<'_> {
    /// The block's number in its pool, `0..capacity`.
    pub fn index(&self) -> usize {
        self.index as usize
    }

    pub fn len(&self) -> usize {
        self.pool.block_size
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.pool.block_ptr(self.index)
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the block's bytes are inside the region, initialised, and
        // reachable only through this guard (it alone holds the index).
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        self.pool.free.push(self.index);
    }
}

impl std::fmt::Debug for Block<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({} of {} bytes)", self.index, self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_distinct_and_come_back() {
        let pool = Pool::new(100, 4, 64, MemPolicy::Local).unwrap();
        assert_eq!(pool.stride(), 128);
        let taken: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(taken.len(), 4);
        assert!(pool.take().is_none(), "a fifth block was handed out");
        let mut idx: Vec<_> = taken.iter().map(Block::index).collect();
        idx.sort_unstable();
        assert_eq!(idx, [0, 1, 2, 3]);
        for b in &taken {
            assert_eq!(b.as_ptr() as usize % 64, 0);
            assert_eq!(b.len(), 100);
        }
        drop(taken);
        let again: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let p = MemPolicy::Local;
        assert!(matches!(
            Pool::new(0, 4, 8, p),
            Err(PoolError::Empty { .. })
        ));
        assert!(matches!(
            Pool::new(8, 0, 8, p),
            Err(PoolError::Empty { .. })
        ));
        assert!(matches!(
            Pool::new(8, 4, 24, p),
            Err(PoolError::BadAlign { .. })
        ));
        assert!(matches!(
            Pool::new(8, usize::MAX, 8, p),
            Err(PoolError::TooManyBlocks { .. })
        ));
        assert!(matches!(
            Pool::new(usize::MAX - 2, 2, 8, p),
            Err(PoolError::TooLarge { .. })
        ));
    }

    #[test]
    fn contents_survive_a_round_trip() {
        let pool = Pool::new(16, 1, 8, MemPolicy::Local).unwrap();
        let mut b = pool.take().unwrap();
        b.as_mut_slice().copy_from_slice(&[9; 16]);
        pool.give(b);
        assert_eq!(pool.take().unwrap().as_slice(), &[9; 16]);
    }
}
