//! `Arena`: a bump allocator over one [`Region`], for weights (copied in at
//! load time) and per-request scratch (a frame per request).
//!
//! Allocation goes through `&self` and hands out `&mut [T]` borrowed from the
//! arena; freeing needs `&mut self` (`reset_to`, `reset`), so the borrow
//! checker proves that nothing handed out is still in use when its bytes are
//! reused. After creation nothing here makes a syscall or touches the heap:
//! an allocation is an add, a compare and a store.
//!
//! ```
//! use pinned_allocator::{Arena, MemPolicy};
//! let mut arena = Arena::new(1 << 20, MemPolicy::Local)?;
//! let frame = arena.mark();
//! let scratch = arena.alloc_aligned::<f32>(256, 64, 0.0)?;
//! scratch[0] = 1.0;
//! arena.reset_to(frame);
//! assert_eq!(arena.used(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::Cell;
use std::mem::{align_of, size_of, MaybeUninit};

use crate::numa::MemPolicy;
use crate::region::{AllocError, Region, RegionOptions};

/// Why an allocation was refused. Small on purpose: it is the `Err` of the
/// hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArenaError {
    #[error(
        "arena exhausted: {requested} bytes aligned to {align} do not fit, {used} of {capacity} \
         bytes are in use; make the arena larger or reset it between requests"
    )]
    Exhausted {
        requested: usize,
        align: usize,
        used: usize,
        capacity: usize,
    },
    #[error("alignment {align} is not a power of two no larger than the page size {page_size}")]
    BadAlign { align: usize, page_size: usize },
    #[error("{count} elements of {elem_size} bytes do not fit in the address space")]
    Overflow { count: usize, elem_size: usize },
    #[error("this mark belongs to another arena")]
    ForeignMark,
    #[error(
        "mark at byte {mark} is past the {used} bytes in use: it was freed by an earlier reset"
    )]
    StaleMark { mark: usize, used: usize },
}

/// The smallest page size (x86-64, aarch64 4K kernels): any alignment up to
/// it fits in every region.
const MIN_PAGE: usize = 4096;

/// A point to return to with [`Arena::reset_to`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    offset: usize,
    arena: usize,
}

impl Mark {
    /// Bytes in use when the mark was taken.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

/// A bump allocator over a region.
///
/// Invariants: `used <= capacity == region.len()`; every live allocation
/// lies in `[base, base + used)`, and no two overlap; `base` is page
/// aligned, so an offset aligned to `a <= page_size` is an address aligned
/// to `a`. `Send` but not `Sync` (the bump pointer is a `Cell`).
#[derive(Debug)]
pub struct Arena {
    region: Region,
    used: Cell<usize>,
}

impl Arena {
    /// An arena of at least `bytes` (rounded up to whole pages) under `policy`.
    pub fn new(bytes: usize, policy: MemPolicy) -> Result<Self, AllocError> {
        Ok(Self::from_region(Region::new(RegionOptions::new(
            bytes, policy,
        ))?))
    }

    /// An arena over a region made with full options (huge pages, mlock...).
    pub fn with_options(options: RegionOptions) -> Result<Self, AllocError> {
        Ok(Self::from_region(Region::new(options)?))
    }

    pub fn from_region(region: Region) -> Self {
        Self {
            region,
            used: Cell::new(0),
        }
    }

    /// `n` copies of `fill`.
    #[inline]
    #[allow(clippy::mut_from_ref)] // fresh, disjoint bytes; reuse needs &mut self
    pub fn alloc<T: Copy>(&self, n: usize, fill: T) -> Result<&mut [T], ArenaError> {
        self.alloc_aligned(n, align_of::<T>(), fill)
    }

    /// `n` copies of `fill` at an address aligned to `align` (at least
    /// `T`'s own alignment), e.g. 64 for cache-line aligned SIMD buffers.
    #[inline]
    #[allow(clippy::mut_from_ref)] // fresh, disjoint bytes; reuse needs &mut self
    pub fn alloc_aligned<T: Copy>(
        &self,
        n: usize,
        align: usize,
        fill: T,
    ) -> Result<&mut [T], ArenaError> {
        let slots = self.alloc_uninit_aligned::<T>(n, align)?;
        for slot in slots.iter_mut() {
            slot.write(fill);
        }
        // SAFETY: every element was just initialised.
        Ok(unsafe { &mut *(slots as *mut [MaybeUninit<T>] as *mut [T]) })
    }

    /// A copy of `src`.
    #[inline]
    #[allow(clippy::mut_from_ref)] // fresh, disjoint bytes; reuse needs &mut self
    pub fn alloc_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], ArenaError> {
        let slots = self.alloc_uninit::<T>(src.len())?;
        for (slot, &v) in slots.iter_mut().zip(src) {
            slot.write(v);
        }
        // SAFETY: every element was just initialised from `src`.
        Ok(unsafe { &mut *(slots as *mut [MaybeUninit<T>] as *mut [T]) })
    }

    /// Room for `n` values of `T`, not initialised.
    #[inline]
    #[allow(clippy::mut_from_ref)] // fresh, disjoint bytes; reuse needs &mut self
    pub fn alloc_uninit<T>(&self, n: usize) -> Result<&mut [MaybeUninit<T>], ArenaError> {
        self.alloc_uninit_aligned(n, align_of::<T>())
    }

    #[inline]
    #[allow(clippy::mut_from_ref)] // fresh, disjoint bytes; reuse needs &mut self
    pub fn alloc_uninit_aligned<T>(
        &self,
        n: usize,
        align: usize,
    ) -> Result<&mut [MaybeUninit<T>], ArenaError> {
        let Some(bytes) = n.checked_mul(size_of::<T>()) else {
            return Err(overflow(n, size_of::<T>()));
        };
        let align = align.max(align_of::<T>());
        // `T`'s own alignment is a power of two, and up to 4096 (the
        // smallest page size) always fits; for `alloc::<T>` this folds to
        // nothing at compile time, so only explicit alignments are checked.
        let natural = align == align_of::<T>() && align <= MIN_PAGE;
        if !natural && (!align.is_power_of_two() || align > self.region.page_size()) {
            return Err(self.bad_align(align));
        }
        let offset = self.bump(bytes, align)?;
        // SAFETY: `bump` reserved `bytes` bytes at `offset`, inside the
        // region, aligned for `T`, and disjoint from every other live
        // allocation; `&mut self` is needed to hand them out again, which
        // ends this borrow. MaybeUninit needs no initialisation.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.region.as_ptr().add(offset).cast(), n) })
    }

    /// Reserves `bytes` at an `align`-aligned offset (`align` checked by
    /// the caller: a power of two up to the page size); returns the offset.
    #[inline(always)]
    fn bump(&self, bytes: usize, align: usize) -> Result<usize, ArenaError> {
        let used = self.used.get();
        // Cannot overflow: used <= capacity <= isize::MAX and align <= page size.
        let start = (used + align - 1) & !(align - 1);
        match start.checked_add(bytes) {
            Some(end) if end <= self.capacity() => {
                self.used.set(end);
                Ok(start)
            }
            _ => Err(self.exhausted(bytes, align)),
        }
    }

    #[cold]
    #[inline(never)]
    fn exhausted(&self, requested: usize, align: usize) -> ArenaError {
        ArenaError::Exhausted {
            requested,
            align,
            used: self.used.get(),
            capacity: self.capacity(),
        }
    }

    #[cold]
    #[inline(never)]
    fn bad_align(&self, align: usize) -> ArenaError {
        ArenaError::BadAlign {
            align,
            page_size: self.region.page_size(),
        }
    }

    /// The current top, to return to with [`reset_to`](Self::reset_to).
    #[inline]
    pub fn mark(&self) -> Mark {
        Mark {
            offset: self.used.get(),
            arena: self.region.as_ptr() as usize,
        }
    }

    /// Frees every byte above `mark`: all allocated since the mark was
    /// taken. A mark is a byte offset, so after a deeper reset it frees
    /// whatever now lies above it. A mark from another arena, or one above
    /// the bytes in use, frees nothing (see [`try_reset_to`](Self::try_reset_to)
    /// to be told). `&mut self` proves no allocation is still borrowed.
    #[inline]
    pub fn reset_to(&mut self, mark: Mark) {
        let _ignored = self.try_reset_to(mark);
    }

    /// As [`reset_to`](Self::reset_to), but says why a mark was refused.
    #[inline]
    pub fn try_reset_to(&mut self, mark: Mark) -> Result<(), ArenaError> {
        if mark.arena != self.region.as_ptr() as usize {
            return Err(ArenaError::ForeignMark);
        }
        let used = self.used.get();
        if mark.offset > used {
            return Err(ArenaError::StaleMark {
                mark: mark.offset,
                used,
            });
        }
        self.used.set(mark.offset);
        Ok(())
    }

    /// Frees everything.
    #[inline]
    pub fn reset(&mut self) {
        self.used.set(0);
    }

    /// Bytes in use, alignment padding included.
    #[inline]
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Bytes the arena can hand out (its region's length).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.region.len()
    }

    #[inline]
    pub fn remaining(&self) -> usize {
        self.capacity() - self.used()
    }

    /// The region under the arena (for `placement()` and the page size).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// True when `ptr` points into this arena's memory.
    pub fn contains(&self, ptr: *const u8) -> bool {
        let base = self.region.as_ptr() as usize;
        (base..base + self.capacity()).contains(&(ptr as usize))
    }
}

#[cold]
#[inline(never)]
fn overflow(count: usize, elem_size: usize) -> ArenaError {
    ArenaError::Overflow { count, elem_size }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena(bytes: usize) -> Arena {
        Arena::new(bytes, MemPolicy::Local).unwrap()
    }

    #[test]
    fn arena_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Arena>();
    }

    #[test]
    fn typed_allocations_are_aligned_filled_and_disjoint() {
        let a = arena(4096);
        let x = a.alloc::<u8>(3, 7).unwrap();
        let y = a.alloc::<u64>(2, u64::MAX).unwrap();
        let z = a.alloc_aligned::<f32>(5, 256, 1.5).unwrap();
        assert_eq!(x, &[7, 7, 7]);
        assert_eq!(y.as_ptr() as usize % 8, 0);
        assert_eq!(y.as_ptr() as usize - x.as_ptr() as usize, 8);
        assert_eq!(z.as_ptr() as usize % 256, 0);
        assert_eq!(z, &[1.5; 5]);
        assert_eq!(a.used(), 256 + 20);
        let c = a.alloc_copy(&[1u16, 2, 3]).unwrap();
        assert_eq!(c, &[1, 2, 3]);
        assert!(a.contains(c.as_ptr().cast()));
    }

    #[test]
    fn exhaustion_is_an_error_naming_the_sizes() {
        let a = arena(4096);
        a.alloc::<u8>(4000, 0).unwrap();
        let e = a.alloc::<u64>(13, 0).unwrap_err();
        assert_eq!(
            e,
            ArenaError::Exhausted {
                requested: 104,
                align: 8,
                used: 4000,
                capacity: 4096
            }
        );
        assert!(e.to_string().contains("104 bytes aligned to 8"), "{e}");
        // The failed call took nothing; an exact fit still succeeds.
        assert_eq!(a.used(), 4000);
        a.alloc::<u64>(12, 0).unwrap();
        assert_eq!(a.remaining(), 0);
        assert!(a.alloc::<u8>(0, 0).unwrap().is_empty());
    }

    #[test]
    fn bad_alignment_and_overflow_are_refused() {
        let a = arena(4096);
        assert!(matches!(
            a.alloc_aligned::<u8>(1, 3, 0),
            Err(ArenaError::BadAlign { align: 3, .. })
        ));
        assert!(matches!(
            a.alloc_aligned::<u8>(1, 8192, 0),
            Err(ArenaError::BadAlign { .. })
        ));
        assert!(a.alloc_aligned::<u8>(1, 4096, 0).is_ok());
        assert_eq!(
            a.alloc_uninit::<u64>(usize::MAX / 4).unwrap_err(),
            ArenaError::Overflow {
                count: usize::MAX / 4,
                elem_size: 8
            }
        );
    }

    #[test]
    fn frames_reset_to_their_mark() {
        let mut a = arena(8192);
        a.alloc::<u8>(10, 0).unwrap();
        let frame = a.mark();
        a.alloc::<u32>(100, 0).unwrap();
        a.reset_to(frame);
        assert_eq!(a.used(), 10);
        // A mark freed past by a full reset is refused, not obeyed.
        let late = {
            a.alloc::<u8>(50, 0).unwrap();
            a.mark()
        };
        a.reset();
        assert_eq!(
            a.try_reset_to(late),
            Err(ArenaError::StaleMark { mark: 60, used: 0 })
        );
        a.reset_to(late);
        assert_eq!(a.used(), 0);
        let other = arena(4096);
        assert_eq!(a.try_reset_to(other.mark()), Err(ArenaError::ForeignMark));
    }

    #[test]
    fn zero_sized_types_take_no_room() {
        let a = arena(4096);
        let units = a.alloc::<()>(1_000_000, ()).unwrap();
        assert_eq!(units.len(), 1_000_000);
        assert_eq!(a.used(), 0);
    }
}
