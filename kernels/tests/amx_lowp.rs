//! bf16 and int8 GEMM against an f64 reference of the fp32 problem, every
//! low-precision path forced in turn (paths this machine lacks must fail
//! loudly), on edge shapes and strides.
//!
//! # Error bounds (per element, before the epilogue)
//!
//! With `S = sum_p |a_ip| |b_pj|`:
//!
//! - **bf16**: each operand is rounded to 8 significant bits (relative
//!   error `u = 2^-8`), so each product is off by at most `(2u + u^2)
//!   |a||b|`; the products of bf16 values are exact in f32 and the f32
//!   accumulation of `K` terms adds at most `(K + 2) * 2^-24 * S` (pairs
//!   summed before accumulation, plus the K-block sums in C).
//!   Bound: `(2u + u^2 + (K + 2) 2^-24) S`.
//! - **int8**: `a = s_a q_a + e_a`, `|e_a| <= s_a / 2` with `s_a =
//!   max_row |a| / 127`, same for `b` per column. The product error is
//!   `|e_a b + a e_b - e_a e_b| <= s_a/2 |b| + s_w/2 |a| + s_a s_w / 4`,
//!   the i32 sum is exact, and the dequantisation adds a few f32
//!   roundings of the result. Bound: `s_a/2 sum|b| + s_w/2 sum|a| + K s_a
//!   s_w / 4 + (K + 8) 2^-24 S`.
//!
//! Then `alpha`, `beta * C` and the epilogue (bias, ReLU, scale, residual:
//! all 1-Lipschitz up to `|scale|`) carry the bound through, plus a few
//! f32 roundings of the magnitudes involved. The tests never time anything.

use pinned_kernels::gemm::{Epilogue, GemmError, MatMut, MatRef, ThreadTeam};
use pinned_kernels::lowp::{self, Elem, LowpPath, PackedLowp};
use pinned_kernels::IsaError;

mod common;

const EPS32: f64 = 1.0 / (1u64 << 24) as f64;
const U_BF16: f64 = 1.0 / 256.0;

/// Deterministic values in [-1, 1) with a few larger outliers (int8
/// scales are then driven by one element, the hard case).
fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut v = common::uniform(len, seed);
    v.iter_mut().skip(3).step_by(97).for_each(|x| *x *= 6.0);
    v
}

/// One problem: logical A (m x k), B (k x n), and how they are stored.
struct Case {
    m: usize,
    k: usize,
    n: usize,
    /// A stored transposed (`k x m` buffer viewed with `.t()`).
    a_trans: bool,
    /// Extra row stride of A's and C's buffers.
    pad: usize,
    alpha: f32,
    beta: f32,
    epilogue: bool,
}

impl Case {
    fn new(m: usize, k: usize, n: usize) -> Self {
        Self {
            m,
            k,
            n,
            a_trans: false,
            pad: 0,
            alpha: 1.0,
            beta: 0.0,
            epilogue: false,
        }
    }
}

struct Operands {
    a_buf: Vec<f32>,
    lda: usize,
    b: Vec<f32>,
    c0: Vec<f32>,
    ldc: usize,
    bias: Vec<f32>,
    residual: Vec<f32>,
}

impl Case {
    fn operands(&self, seed: u64) -> Operands {
        let (m, k, n) = (self.m, self.k, self.n);
        let (rows, cols) = if self.a_trans { (k, m) } else { (m, k) };
        let lda = cols + self.pad;
        let ldc = n + self.pad;
        Operands {
            a_buf: data(rows.max(1) * lda, seed),
            lda,
            b: data(k * n, seed + 1),
            c0: if self.beta == 0.0 {
                vec![f32::NAN; m.max(1) * ldc]
            } else {
                data(m.max(1) * ldc, seed + 2)
            },
            ldc,
            bias: data(n, seed + 3),
            residual: data(m * n, seed + 4),
        }
    }

    fn a_at(&self, o: &Operands, i: usize, p: usize) -> f32 {
        if self.a_trans {
            o.a_buf[p * o.lda + i]
        } else {
            o.a_buf[i * o.lda + p]
        }
    }

    fn a_view<'a>(&self, o: &'a Operands) -> MatRef<'a> {
        if self.a_trans {
            MatRef::new(&o.a_buf, self.k, self.m, o.lda).expect("A").t()
        } else {
            MatRef::new(&o.a_buf, self.m, self.k, o.lda).expect("A")
        }
    }

    const SCALE: f32 = 0.75;

    fn epilogue<'a>(&self, o: &'a Operands) -> Epilogue<'a> {
        if self.epilogue {
            Epilogue::new()
                .bias(&o.bias)
                .relu()
                .scale(Self::SCALE)
                .residual(&o.residual, self.n)
        } else {
            Epilogue::new()
        }
    }

    /// Checks `got` (row stride `ldc`) against the f64 reference within
    /// the documented bound for `elem`.
    fn check(&self, elem: Elem, o: &Operands, got: &[f32], what: &str) {
        let (m, k, n) = (self.m, self.k, self.n);
        let row_scale: Vec<f64> = (0..m)
            .map(|i| {
                (0..k)
                    .map(|p| f64::from(self.a_at(o, i, p).abs()))
                    .fold(0.0, f64::max)
                    / 127.0
            })
            .collect();
        let col_scale: Vec<f64> = (0..n)
            .map(|j| {
                (0..k)
                    .map(|p| f64::from(o.b[p * n + j].abs()))
                    .fold(0.0, f64::max)
                    / 127.0
            })
            .collect();
        for i in 0..m {
            for j in 0..n {
                let (mut dot, mut s, mut sum_a, mut sum_b) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
                for p in 0..k {
                    let (a, b) = (f64::from(self.a_at(o, i, p)), f64::from(o.b[p * n + j]));
                    dot += a * b;
                    s += (a * b).abs();
                    sum_a += a.abs();
                    sum_b += b.abs();
                }
                let kf = k as f64;
                let bound = match elem {
                    Elem::Bf16 => (2.0 * U_BF16 + U_BF16 * U_BF16 + (kf + 2.0) * EPS32) * s,
                    Elem::Int8 => {
                        let (sa, sw) = (row_scale[i], col_scale[j]);
                        sa / 2.0 * sum_b
                            + sw / 2.0 * sum_a
                            + kf * sa * sw / 4.0
                            + (kf + 8.0) * EPS32 * s
                    }
                };
                let alpha = f64::from(self.alpha);
                let c_old = if self.beta == 0.0 {
                    0.0
                } else {
                    f64::from(o.c0[i * o.ldc + j])
                };
                let mut want = alpha * dot + f64::from(self.beta) * c_old;
                let mut tol = alpha.abs() * bound;
                let mut mag = want.abs() + (alpha * dot).abs();
                if self.epilogue {
                    let (bias, res) = (f64::from(o.bias[j]), f64::from(o.residual[i * n + j]));
                    want = (want + bias).max(0.0) * f64::from(Self::SCALE) + res;
                    tol *= f64::from(Self::SCALE);
                    mag += bias.abs() + res.abs() + want.abs();
                }
                tol += 8.0 * EPS32 * mag + 1e-30;
                let g = f64::from(got[i * o.ldc + j]);
                assert!(
                    (g - want).abs() <= tol,
                    "{what}: ({i}, {j}) of {m}x{k}x{n}: got {g}, want {want}, |err| {} > {tol}",
                    (g - want).abs()
                );
            }
            for j in n..o.ldc {
                let g = got[i * o.ldc + j];
                let old = o.c0[i * o.ldc + j];
                assert!(
                    g.to_bits() == old.to_bits(),
                    "{what}: padding ({i}, {j}) was written"
                );
            }
        }
    }
}

fn run(case: &Case, elem: Elem, path: LowpPath, team: Option<&ThreadTeam>) {
    let o = case.operands((case.m * 131 + case.k * 7 + case.n) as u64);
    // Pack B both from row-major and from a transposed `[n][k]` store.
    let bt: Vec<f32> = (0..case.n * case.k)
        .map(|i| o.b[(i % case.k) * case.n + i / case.k])
        .collect();
    let packed = PackedLowp::new(MatRef::new(&o.b, case.k, case.n, case.n).expect("B"), elem);
    let packed_t = PackedLowp::new(
        MatRef::new(&bt, case.n, case.k, case.k).expect("Bt").t(),
        elem,
    );
    for (which, b) in [("B", &packed), ("B^T", &packed_t)] {
        let mut c = o.c0.clone();
        // Scratch starts as NaN patterns: padding rows the driver leaves
        // unconverted (M <= 16 zeroes 16 rows, not 32) must not reach C.
        let mut scratch = vec![0xFFu8; lowp::scratch_bytes(elem, case.m, case.k)];
        let cv = MatMut::new(&mut c, case.m, case.n, o.ldc).expect("C");
        let epi = case.epilogue(&o);
        let result = match team {
            Some(t) => lowp::gemm_parallel(
                t,
                path,
                case.alpha,
                case.a_view(&o),
                b,
                case.beta,
                cv,
                &epi,
                &mut scratch,
            ),
            None => lowp::gemm(
                path,
                case.alpha,
                case.a_view(&o),
                b,
                case.beta,
                cv,
                &epi,
                &mut scratch,
            ),
        };
        result.expect("gemm");
        let what = format!(
            "{} {which} threads={}",
            path.describe(elem),
            team.map_or(1, |t| {
                use pinned_kernels::gemm::Team;
                t.threads()
            })
        );
        case.check(elem, &o, &c, &what);
    }
}

/// Shapes around the tile edges: 16/32 rows (AMX), 8 rows (AVX-512 and
/// fallback), 16/32 columns, K steps of 32 (bf16) and 64 (int8), one or
/// more steps for each row tile form, and K
/// beyond the K block (large-M blocks split K: 512 bf16, 768-1024 int8).
fn shapes() -> Vec<Case> {
    let mut v = Vec::new();
    for &(m, k, n) in &[
        (1, 1, 1),
        (1, 64, 33),
        (3, 5, 7),
        (7, 31, 16),
        (8, 32, 17),
        (9, 33, 31),
        (15, 63, 32),
        (16, 64, 48),
        (17, 65, 15),
        (31, 100, 65),
        (32, 128, 64),
        (33, 127, 33),
        // Two row tiles over a single K step (bf16 and int8), and two
        // steps of bf16.
        (40, 20, 33),
        (50, 64, 35),
        (65, 1100, 40),
        (100, 37, 97),
    ] {
        v.push(Case::new(m, k, n));
    }
    v.push(Case {
        a_trans: true,
        pad: 3,
        ..Case::new(19, 45, 37)
    });
    v.push(Case {
        pad: 5,
        alpha: -0.5,
        beta: 0.25,
        epilogue: true,
        ..Case::new(35, 70, 50)
    });
    // alpha with beta = 0 (C not read) on whole tiles, in the direct
    // order and (more than 64 rows, K beyond one strip slice) the strip
    // order: the write-back's own loop for that case.
    v.push(Case {
        alpha: -0.5,
        epilogue: true,
        ..Case::new(48, 130, 64)
    });
    v.push(Case {
        alpha: 2.0,
        epilogue: true,
        ..Case::new(96, 600, 64)
    });
    // K split into blocks with beta = 0: partial sums kept in C (full
    // tiles loaded and stored directly) and in the staging tile (edges).
    v.push(Case::new(96, 1100, 70));
    // K split with beta != 0: every block goes through the staging tile.
    v.push(Case {
        beta: 0.5,
        epilogue: true,
        ..Case::new(70, 1100, 33)
    });
    v.push(Case {
        a_trans: true,
        beta: 1.0,
        epilogue: true,
        ..Case::new(66, 200, 33)
    });
    // Several row blocks (a 34-row tail with padding) converted one after
    // another into the same packed rows.
    v.push(Case {
        epilogue: true,
        ..Case::new(290, 300, 70)
    });
    // Several K blocks on every path (AMX's KC is 2048 bf16) and several
    // column blocks: A is converted again for each column block. On AMX
    // (more than 64 rows, K beyond one strip slice) the strip order, with
    // a K tail slice shorter than the others.
    v.push(Case::new(70, 2100, 400));
    // The strip order with beta and an epilogue, two row strips (160 rows)
    // and a last row tile of at most 16 rows (the one-row kernel).
    v.push(Case {
        beta: -1.5,
        epilogue: true,
        ..Case::new(164, 600, 40)
    });
    v
}

fn forced_paths(elem: Elem) -> Vec<LowpPath> {
    let mut run = Vec::new();
    for path in LowpPath::ALL {
        match path.require(elem) {
            Ok(p) => run.push(p),
            Err(IsaError::Unavailable(..)) => {
                eprintln!("{} not available here: skipped", path.describe(elem))
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(run.contains(&LowpPath::Fallback));
    run
}

#[test]
fn bf16_every_path_matches_reference() {
    for path in forced_paths(Elem::Bf16) {
        for case in shapes() {
            run(&case, Elem::Bf16, path, None);
        }
    }
}

#[test]
fn int8_every_path_matches_reference() {
    for path in forced_paths(Elem::Int8) {
        for case in shapes() {
            run(&case, Elem::Int8, path, None);
        }
    }
}

#[test]
fn parallel_splits_rows_and_columns() {
    let team = ThreadTeam::new(3).expect("team");
    for elem in [Elem::Bf16, Elem::Int8] {
        for path in forced_paths(elem) {
            // 200 rows: split by rows (each thread converts its own A rows);
            // 5 rows: split by 32-column blocks.
            for case in [
                Case::new(200, 96, 70),
                Case::new(5, 130, 200),
                Case::new(1, 64, 20),
            ] {
                run(&case, elem, path, Some(&team));
            }
        }
    }
}

/// A block of C larger than L2, 64-byte aligned, beta = 0: the strip
/// order writes it with non-temporal stores (through the epilogue).
#[test]
fn large_aligned_c_is_streamed_correctly() {
    let case = Case {
        epilogue: true,
        ..Case::new(264, 520, 2048)
    };
    for elem in [Elem::Bf16, Elem::Int8] {
        let Ok(path) = LowpPath::Amx.require(elem) else {
            eprintln!("AMX not available here: skipped");
            return;
        };
        let o = case.operands(11);
        let packed = PackedLowp::new(MatRef::new(&o.b, case.k, case.n, case.n).expect("B"), elem);
        let mut buf = vec![0.0f32; o.c0.len() + 16];
        let off = buf.as_ptr().align_offset(64);
        let c = &mut buf[off..off + o.c0.len()];
        c.copy_from_slice(&o.c0);
        let mut scratch = vec![0u8; lowp::scratch_bytes(elem, case.m, case.k)];
        lowp::gemm(
            path,
            case.alpha,
            case.a_view(&o),
            &packed,
            case.beta,
            MatMut::new(c, case.m, case.n, o.ldc).expect("C"),
            &case.epilogue(&o),
            &mut scratch,
        )
        .expect("gemm");
        let what = format!("{} aligned C", path.describe(elem));
        case.check(elem, &o, c, &what);
    }
}

#[test]
fn amx_is_used_where_the_cpu_has_it() {
    let f = pinned_kernels::cpu_features();
    if f.amx_supported()
        && f.amx_bf16
        && f.avx512_usable()
        && pinned_kernels::request_amx_permission().is_ok()
    {
        assert_eq!(LowpPath::best(Elem::Bf16), LowpPath::Amx);
    } else {
        eprintln!("no AMX here: the fallbacks above were the paths tested");
        assert_ne!(LowpPath::best(Elem::Bf16), LowpPath::Amx);
    }
}

#[test]
fn bad_calls_are_refused_and_leave_c_alone() {
    let (m, k, n) = (4, 10, 6);
    let a = data(m * k, 1);
    let w = data(k * n, 2);
    let b = PackedLowp::new(MatRef::new(&w, k, n, n).expect("B"), Elem::Bf16);
    let path = LowpPath::Fallback;
    let mut c = vec![7.0f32; m * n];
    let mut scratch = vec![0u8; lowp::scratch_bytes(Elem::Bf16, m, k)];
    let av = MatRef::new(&a, m, k, k).expect("A");
    // Wrong inner dimension.
    let short = MatRef::new(&a, m, k - 1, k).expect("A'");
    let r = lowp::gemm(
        path,
        1.0,
        short,
        &b,
        0.0,
        MatMut::new(&mut c, m, n, n).expect("C"),
        &Epilogue::new(),
        &mut scratch,
    );
    assert!(matches!(r, Err(GemmError::Shape(_))), "{r:?}");
    // Scratch too small.
    let mut tiny = vec![0u8; 16];
    let r = lowp::gemm(
        path,
        1.0,
        av,
        &b,
        0.0,
        MatMut::new(&mut c, m, n, n).expect("C"),
        &Epilogue::new(),
        &mut tiny,
    );
    assert!(matches!(r, Err(GemmError::BufferTooSmall { .. })), "{r:?}");
    // Bias too short.
    let bias = vec![0.0f32; n - 1];
    let r = lowp::gemm(
        path,
        1.0,
        av,
        &b,
        0.0,
        MatMut::new(&mut c, m, n, n).expect("C"),
        &Epilogue::new().bias(&bias),
        &mut scratch,
    );
    assert!(matches!(r, Err(GemmError::BadOperand { .. })), "{r:?}");
    assert!(c.iter().all(|&x| x == 7.0), "C was written on error");
    // A path this machine lacks is an error, not a silent fallback.
    for p in LowpPath::ALL {
        if !p.is_available(Elem::Bf16) {
            let r = lowp::gemm(
                p,
                1.0,
                av,
                &b,
                0.0,
                MatMut::new(&mut c, m, n, n).expect("C"),
                &Epilogue::new(),
                &mut scratch,
            );
            assert!(
                matches!(r, Err(GemmError::Isa(IsaError::Unavailable(..)))),
                "{r:?}"
            );
        }
    }
    // int8 K beyond what i32 sums hold.
    let big_k = lowp::INT8_MAX_K + 1;
    let wk = vec![0.5f32; big_k];
    let bk = PackedLowp::new(MatRef::new(&wk, big_k, 1, 1).expect("Bk"), Elem::Int8);
    let ak = vec![0.5f32; big_k];
    let mut ck = vec![0.0f32; 1];
    let mut sk = vec![0u8; lowp::scratch_bytes(Elem::Int8, 1, big_k)];
    let r = lowp::gemm(
        path,
        1.0,
        MatRef::new(&ak, 1, big_k, big_k).expect("Ak"),
        &bk,
        0.0,
        MatMut::new(&mut ck, 1, 1, 1).expect("Ck"),
        &Epilogue::new(),
        &mut sk,
    );
    assert!(matches!(r, Err(GemmError::Shape(_))), "{r:?}");
}

#[test]
fn nan_in_a_row_poisons_only_that_row() {
    let (m, k, n) = (3, 40, 20);
    let mut a = data(m * k, 9);
    a[k + 5] = f32::NAN;
    let w = data(k * n, 10);
    for elem in [Elem::Bf16, Elem::Int8] {
        let b = PackedLowp::new(MatRef::new(&w, k, n, n).expect("B"), elem);
        for path in forced_paths(elem) {
            let mut c = vec![0.0f32; m * n];
            let mut scratch = vec![0u8; lowp::scratch_bytes(elem, m, k)];
            lowp::gemm(
                path,
                1.0,
                MatRef::new(&a, m, k, k).expect("A"),
                &b,
                0.0,
                MatMut::new(&mut c, m, n, n).expect("C"),
                &Epilogue::new(),
                &mut scratch,
            )
            .expect("gemm");
            assert!(
                c[n..2 * n].iter().all(|x| x.is_nan()),
                "{}: row 1",
                path.describe(elem)
            );
            assert!(
                c[..n].iter().chain(&c[2 * n..]).all(|x| x.is_finite()),
                "{}",
                path.describe(elem)
            );
        }
    }
}
