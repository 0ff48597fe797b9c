//! The parallel low-precision GEMM against the serial one, bit for bit:
//! every path this machine has, teams of 2 to 4 threads (more threads
//! than this machine's cores included, so workers are descheduled and the
//! caller runs their indices), row splits and column splits, repeated.
//!
//! Each output tile is computed by the same kernel over the same K steps
//! in either case, so any difference is a tile computed twice, skipped,
//! or raced on (a flake once seen in `amx_lowp.rs`'s
//! `parallel_splits_rows_and_columns`: a row of C left unwritten under
//! load). The tests never time anything.

use pinned_kernels::gemm::{Epilogue, MatMut, MatRef, ThreadTeam};
use pinned_kernels::lowp::{self, Elem, LowpPath, PackedLowp};

mod common;
use common::uniform as data;

/// Rounds of every shape, path and team size (cheap shapes: the point is
/// many thread rendezvous, not big products).
const ROUNDS: usize = 32;

#[test]
fn parallel_matches_serial_bit_for_bit() {
    let teams: Vec<ThreadTeam> = (2..=4).map(|t| ThreadTeam::new(t).expect("team")).collect();
    // (m, k, n, beta): row splits (two 32-row units or more per thread),
    // column splits, one row, and beta != 0 (where a tile written twice
    // would show too).
    let shapes = [
        (200, 96, 70, 0.0f32),
        (5, 130, 200, 0.0),
        (1, 64, 20, 0.0),
        (130, 70, 40, 0.5),
        (33, 200, 300, 1.0),
        // Each of 2 or 3 threads converts and runs two row blocks or more.
        (300, 200, 50, 0.0),
        // K deeper than the AMX strip slices (256 bf16, 512 int8): partial
        // sums kept in the strip across K slices.
        (300, 700, 50, 0.0),
    ];
    for elem in [Elem::Bf16, Elem::Int8] {
        for path in LowpPath::available(elem) {
            for (si, &(m, k, n, beta)) in shapes.iter().enumerate() {
                let a = data(m * k, 11 + si as u64);
                let w = data(k * n, 23 + si as u64);
                let c0 = data(m * n, 37 + si as u64);
                let b = PackedLowp::new(MatRef::new(&w, k, n, n).expect("B"), elem);
                let mut scratch = vec![0u8; lowp::scratch_bytes(elem, m, k)];
                let run = |team: Option<&ThreadTeam>, scratch: &mut [u8]| {
                    let mut c = c0.clone();
                    let (av, cv) = (
                        MatRef::new(&a, m, k, k).expect("A"),
                        MatMut::new(&mut c, m, n, n).expect("C"),
                    );
                    let epi = Epilogue::new();
                    match team {
                        Some(t) => {
                            lowp::gemm_parallel(t, path, 1.0, av, &b, beta, cv, &epi, scratch)
                        }
                        None => lowp::gemm(path, 1.0, av, &b, beta, cv, &epi, scratch),
                    }
                    .expect("gemm");
                    c
                };
                let want = run(None, &mut scratch);
                for round in 0..ROUNDS {
                    for team in &teams {
                        let got = run(Some(team), &mut scratch);
                        let bad: Vec<(usize, usize)> = (0..m * n)
                            .filter(|&x| got[x].to_bits() != want[x].to_bits())
                            .map(|x| (x / n, x % n))
                            .collect();
                        assert!(
                            bad.is_empty(),
                            "{} {m}x{k}x{n} beta {beta}, {} threads, round {round}: \
                             {} elements differ, first {:?} (got {}, want {})",
                            path.describe(elem),
                            pinned_kernels::gemm::Team::threads(team),
                            bad.len(),
                            bad[0],
                            got[bad[0].0 * n + bad[0].1],
                            want[bad[0].0 * n + bad[0].1],
                        );
                    }
                }
            }
        }
    }
}
