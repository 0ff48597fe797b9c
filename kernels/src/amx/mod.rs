//! Intel AMX: tile configuration, per-thread tile state, and the `asm!`
//! tile microkernels (AMX intrinsics are not stable in Rust).
//!
//! Life cycle: the process asks `arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XTILEDATA)` once ([`crate::cpu::request_amx_permission`], done by the
//! [`AmxBf16`] / [`AmxInt8`] tokens' `try_new`); each thread that runs a
//! tile kernel loads the one tile configuration this crate uses
//! ([`ensure_tiles`], palette 1, eight 16 x 64-byte tiles) the first time,
//! and a thread-local guard runs `TILERELEASE` when the thread ends, so the
//! OS stops saving 8 KiB of tile data on its context switches.
//!
//! Every tile instruction lives in this module and in [`probe`]; tiles are
//! never live across two `asm!` blocks (each block zeroes or loads,
//! computes and stores its accumulators, `tile_run` for several blocks
//! in a row), so nothing depends on the compiler leaving `tmm` registers
//! alone between blocks.

#![allow(clippy::too_many_arguments)]

pub mod probe;
pub mod strip_probe;
mod tile_kernels;
mod tile_run;

pub(crate) use tile_kernels::{tile_kernel, OutRows, TileOp, PF_STEP};
pub(crate) use tile_run::{run_hint_steps, tile_run, TileRun, ACC_BLOCK};

use std::cell::Cell;

use crate::isa::{AmxBf16, AmxInt8};

/// Rows of every tile.
pub const TILE_ROWS: usize = 16;
/// Bytes per tile row (the palette-1 maximum).
pub const TILE_ROW_BYTES: usize = 64;

/// The 64-byte `LDTILECFG` operand (Intel SDM vol. 2, LDTILECFG, "Tile
/// Configuration"): palette, start row, 14 reserved bytes, 16 column byte
/// counts (u16), 16 row counts (u8). Unused tiles stay 0.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    /// Palette 1, tiles 0..8 all `16 x 64` bytes: 16 x 16 f32/i32
    /// accumulators, 16 rows x 32 bf16 (or 64 int8) of A, 16 K-pair (or
    /// K-quad) rows of 16 columns of B.
    const fn full() -> Self {
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        let mut t = 0;
        while t < 8 {
            colsb[t] = TILE_ROW_BYTES as u16;
            rows[t] = TILE_ROWS as u8;
            t += 1;
        }
        Self {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb,
            rows,
        }
    }
}

static CONFIG: TileConfig = TileConfig::full();

/// Per-thread tile state: configured once, released at thread exit.
struct ThreadTiles {
    configured: Cell<bool>,
}

impl Drop for ThreadTiles {
    fn drop(&mut self) {
        if self.configured.get() {
            // SAFETY: `configured` is only set after LDTILECFG succeeded on
            // this thread, which needs AMX; TILERELEASE takes no operands.
            unsafe { core::arch::asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
        }
    }
}

thread_local! {
    static TILES: ThreadTiles = const { ThreadTiles { configured: Cell::new(false) } };
}

/// Proof that tile instructions may run in this process.
pub(crate) trait AmxToken: Copy {}
impl AmxToken for AmxBf16 {}
impl AmxToken for AmxInt8 {}

/// Loads this crate's tile configuration on the calling thread unless it
/// already has it. Cheap after the first call (one thread-local read).
#[inline]
pub(crate) fn ensure_tiles<T: AmxToken>(_proof: T) {
    TILES.with(|t| {
        if !t.configured.get() {
            configure();
            t.configured.set(true);
        }
    });
}

#[cold]
#[inline(never)]
fn configure() {
    // SAFETY: only reached through `ensure_tiles`, whose token proves AMX is
    // on the CPU and permitted for this process; CONFIG is 64 readable,
    // 64-byte-aligned bytes with a valid palette-1 layout.
    unsafe {
        core::arch::asm!(
            "ldtilecfg [{cfg}]",
            cfg = in(reg) &CONFIG as *const TileConfig,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// Whether the calling thread holds a tile configuration (for tests).
pub fn thread_tiles_configured() -> bool {
    TILES.with(|t| t.configured.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout_is_the_architectural_one() {
        assert_eq!(core::mem::size_of::<TileConfig>(), 64);
        let c = TileConfig::full();
        // SAFETY: TileConfig is repr(C), 64 bytes, no padding (checked above).
        let bytes: [u8; 64] = unsafe { core::mem::transmute(c) };
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[16..18], &[64, 0]);
        assert_eq!(bytes[48], 16);
        assert_eq!(bytes[56], 0, "tile 8 unused");
    }

    #[test]
    fn tiles_configured_per_thread_and_released_at_exit() {
        let Some(t) = AmxBf16::try_new() else {
            eprintln!("skipped: AMX not usable here");
            return;
        };
        std::thread::spawn(move || {
            assert!(!thread_tiles_configured());
            ensure_tiles(t);
            assert!(thread_tiles_configured());
            ensure_tiles(t);
        })
        .join()
        .expect("tile thread");
        assert!(crate::cpu::amx_permission_granted());
    }
}
