//! Portable microkernel: 4 x 8 scalars, for CPUs (or valgrind's emulated
//! CPUID) without AVX2. 32 accumulators fit the 16 SSE registers only
//! because the compiler may pack them; correctness, not speed, is the goal.

use super::kernel::{dispatch_rows, MicroKernel, Tile, TileParams};
use crate::isa::Scalar;

impl MicroKernel for Scalar {
    const MR: usize = 4;
    const NR: usize = 8;

    #[inline(always)]
    unsafe fn run(self, t: &Tile, p: &TileParams) {
        dispatch_rows!(self, 8, t, p, [1, 2, 3, 4])
    }
}
