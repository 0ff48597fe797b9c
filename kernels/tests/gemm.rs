//! Every GEMM path this machine has, forced in turn, against a naive
//! reference that accumulates in f64.
//!
//! Tolerance, per element: a K-term f32 dot product (FMA or not, blocked
//! or not) is within `(K + 2) * eps * sum_p |a_ip b_pj|` of the exact value
//! (Higham, *Accuracy and Stability*, 3.1); the `alpha`/`beta` combination
//! adds two more roundings, and the epilogue's GELU approximations add an
//! absolute error below `2e-6 * (1 + |t|)` (A&S 7.1.26 erf: 1.5e-7; our
//! exp: ~2 ulp).

use pinned_kernels::gemm::{
    self, Activation, BMatrix, Blocking, Epilogue, GemmError, MatMut, MatRef, PackedB, Team,
    ThreadTeam,
};
use pinned_kernels::Isa;
use proptest::prelude::*;

mod common;
use common::erf64;

/// Deterministic values in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    common::uniform(len, seed)
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    beta: f32,
    /// Extra row-stride padding for A, B, C.
    pad: usize,
    trans_a: bool,
    packed: bool,
    bias: bool,
    act: Activation,
    scale: Option<f32>,
    residual: bool,
}

impl Case {
    fn plain(m: usize, n: usize, k: usize) -> Self {
        Case {
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            pad: 0,
            trans_a: false,
            packed: true,
            bias: false,
            act: Activation::None,
            scale: None,
            residual: false,
        }
    }
}

enum Runner<'t> {
    Serial,
    Parallel(&'t dyn Team),
}

fn check(isa: Isa, case: &Case, runner: &Runner<'_>) {
    let Case {
        m,
        n,
        k,
        alpha,
        beta,
        pad,
        ..
    } = *case;
    // op(A) is m x k; stored k x m when transposed.
    let (a_rows, a_cols) = if case.trans_a { (k, m) } else { (m, k) };
    let lda = a_cols + pad;
    let ldb = n + pad;
    let ldc = n + pad;
    let a = fill(a_rows.max(1) * lda, 1 + m as u64);
    let b = fill(k.max(1) * ldb, 2 + n as u64);
    let c0 = fill(m.max(1) * ldc, 3 + k as u64);
    let bias = fill(n, 4);
    let res = fill(m.max(1) * ldc, 5);
    let a_at = |i: usize, p: usize| -> f64 {
        if case.trans_a {
            a[p * lda + i] as f64
        } else {
            a[i * lda + p] as f64
        }
    };

    // beta = 0 must not read C: poison it.
    let mut c = if beta == 0.0 {
        vec![f32::NAN; c0.len()]
    } else {
        c0.clone()
    };

    let mut epi = Epilogue::new().activation(case.act);
    if case.bias {
        epi = epi.bias(&bias);
    }
    if let Some(s) = case.scale {
        epi = epi.scale(s);
    }
    if case.residual {
        epi = epi.residual(&res, ldc);
    }

    let a_view = MatRef::new(&a, a_rows, a_cols, lda).unwrap();
    let a_view = if case.trans_a { a_view.t() } else { a_view };
    let b_view = MatRef::new(&b, k, n, ldb).unwrap();
    let packed = PackedB::new(&b, ldb, k, n, isa).unwrap();
    let b_arg = if case.packed {
        BMatrix::Packed(&packed)
    } else {
        BMatrix::Plain(b_view)
    };
    let c_view = MatMut::new(&mut c, m, n, ldc).unwrap();
    match runner {
        Runner::Serial => {
            let mut scratch = vec![0u8; gemm::gemm_scratch_bytes(m, n, k, isa)];
            gemm::sgemm(isa, alpha, a_view, b_arg, beta, c_view, &epi, &mut scratch).unwrap();
        }
        Runner::Parallel(team) => {
            let bytes = gemm::gemm_scratch_bytes_parallel(m, n, k, isa, team.threads());
            let mut scratch = vec![0u8; bytes];
            gemm::sgemm_parallel(
                *team,
                isa,
                alpha,
                a_view,
                b_arg,
                beta,
                c_view,
                &epi,
                &mut scratch,
            )
            .unwrap();
        }
    }

    let eps = f32::EPSILON as f64;
    for i in 0..m {
        for j in 0..n {
            let (mut dot, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let t = a_at(i, p) * b[p * ldb + j] as f64;
                dot += t;
                mag += t.abs();
            }
            let old = if beta == 0.0 {
                0.0
            } else {
                c0[i * ldc + j] as f64
            };
            let mut t = alpha as f64 * dot + beta as f64 * old;
            let mut tol =
                (k as f64 + 4.0) * eps * (alpha.abs() as f64 * mag + (beta as f64 * old).abs());
            if case.bias {
                t += bias[j] as f64;
                tol += 2.0 * eps * t.abs();
            }
            t = match case.act {
                Activation::None => t,
                Activation::Relu => t.max(0.0),
                Activation::GeluErf => 0.5 * t * (1.0 + erf64(t / std::f64::consts::SQRT_2)),
                Activation::GeluTanh => {
                    let u = (2.0 / std::f64::consts::PI).sqrt() * (t + 0.044715 * t * t * t);
                    0.5 * t * (1.0 + u.tanh())
                }
            };
            if case.act != Activation::None {
                // GELU's slope is below 1.13: errors so far pass through scaled by it.
                tol = tol * 1.13 + 2e-6 * (1.0 + t.abs());
            }
            if let Some(s) = case.scale {
                t *= s as f64;
                tol = tol * (s.abs() as f64) + eps * t.abs();
            }
            if case.residual {
                t += res[i * ldc + j] as f64;
                tol += 2.0 * eps * t.abs();
            }
            let got = c[i * ldc + j] as f64;
            assert!(
                (got - t).abs() <= tol,
                "{isa} {case:?}: C[{i},{j}] = {got}, expected {t} (tol {tol:e})"
            );
        }
        // Padding columns untouched.
        for j in n..ldc {
            let got = c[i * ldc + j];
            let want = if beta == 0.0 {
                f32::NAN
            } else {
                c0[i * ldc + j]
            };
            assert!(
                got.to_bits() == want.to_bits(),
                "{isa}: padding C[{i},{j}] written"
            );
        }
    }
}

/// Sizes around a tile edge `t`: 1, t-1, t, t+1, plus primes.
fn edge_sizes(t: usize) -> Vec<usize> {
    let mut v = vec![1, t.saturating_sub(1).max(1), t, t + 1, 2 * t + 3, 37];
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn edge_shapes_every_isa() {
    for isa in Isa::available() {
        let (mr, nr) = Blocking::tile(isa);
        for m in edge_sizes(mr) {
            for n in edge_sizes(nr) {
                for k in [1, 7, 64] {
                    check(isa, &Case::plain(m, n, k), &Runner::Serial);
                }
            }
        }
    }
}

#[test]
fn strides_transpose_alpha_beta_and_plain_b() {
    for isa in Isa::available() {
        for (alpha, beta) in [
            (1.0, 0.0),
            (0.5, 1.0),
            (-2.0, 0.25),
            (0.0, 1.0),
            (1.0, -1.0),
        ] {
            for trans_a in [false, true] {
                for packed in [false, true] {
                    let case = Case {
                        alpha,
                        beta,
                        pad: 3,
                        trans_a,
                        packed,
                        ..Case::plain(23, 45, 29)
                    };
                    check(isa, &case, &Runner::Serial);
                }
            }
        }
    }
}

#[test]
fn every_epilogue() {
    let acts = [
        Activation::None,
        Activation::Relu,
        Activation::GeluErf,
        Activation::GeluTanh,
    ];
    for isa in Isa::available() {
        for act in acts {
            for (bias, scale, residual) in [
                (true, None, false),
                (false, Some(0.7), true),
                (true, Some(-1.5), true),
            ] {
                let case = Case {
                    beta: 0.5,
                    pad: 1,
                    bias,
                    act,
                    scale,
                    residual,
                    ..Case::plain(19, 35, 40)
                };
                check(isa, &case, &Runner::Serial);
                // The epilogue must run once, on the last K block.
                let long_k = Case { k: 1100, ..case };
                check(isa, &long_k, &Runner::Serial);
            }
        }
    }
}

#[test]
fn long_k_and_k_zero() {
    for isa in Isa::available() {
        check(isa, &Case::plain(3, 40, 1031), &Runner::Serial);
        check(
            isa,
            &Case {
                beta: 1.0,
                ..Case::plain(33, 70, 1031)
            },
            &Runner::Serial,
        );
        // K = 0: C = beta * C (+ epilogue).
        check(
            isa,
            &Case {
                beta: 0.5,
                bias: true,
                ..Case::plain(5, 9, 0)
            },
            &Runner::Serial,
        );
        check(isa, &Case::plain(0, 9, 4), &Runner::Serial);
        check(isa, &Case::plain(5, 0, 4), &Runner::Serial);
    }
}

#[test]
fn parallel_matches_reference() {
    for threads in [2, 3] {
        let team = ThreadTeam::new(threads).unwrap();
        for isa in Isa::available() {
            for (m, n, k) in [
                (1, 100, 50),
                (4, 33, 17),
                (61, 95, 70),
                (200, 7, 30),
                (2, 1, 9),
            ] {
                for packed in [true, false] {
                    let case = Case {
                        packed,
                        beta: 0.5,
                        bias: true,
                        act: Activation::GeluTanh,
                        residual: true,
                        pad: 2,
                        ..Case::plain(m, n, k)
                    };
                    check(isa, &case, &Runner::Parallel(&team));
                }
            }
        }
    }
}

#[test]
fn env_force_switch_selects_or_fails() {
    // Only reads the variable: tests run in parallel, so do not set it.
    match std::env::var("PINNED_ISA") {
        Ok(name) if !name.is_empty() => match Isa::from_env() {
            Ok(isa) => assert_eq!(isa.name(), name.trim().to_ascii_lowercase()),
            Err(e) => assert!(e.to_string().contains(name.trim()), "{e}"),
        },
        _ => assert_eq!(Isa::from_env(), Ok(Isa::best())),
    }
}

#[test]
fn bad_calls_get_typed_errors() {
    let isa = Isa::best();
    let a = vec![1.0f32; 6];
    let b = vec![1.0f32; 6];
    let mut c = vec![0.0f32; 4];
    let mut scratch = vec![0u8; gemm::gemm_scratch_bytes(2, 2, 3, isa)];
    let av = MatRef::new(&a, 2, 3, 3).unwrap();
    // B is 2 x 3 but op(A) is 2 x 3: inner dimensions differ.
    let bv = MatRef::new(&b, 2, 3, 3).unwrap();
    let err = gemm::sgemm(
        isa,
        1.0,
        av,
        BMatrix::Plain(bv),
        0.0,
        MatMut::new(&mut c, 2, 2, 2).unwrap(),
        &Epilogue::new(),
        &mut scratch,
    );
    assert!(matches!(err, Err(GemmError::Shape(_))), "{err:?}");
    assert!(matches!(
        MatRef::new(&a, 3, 3, 3),
        Err(GemmError::BadOperand { .. })
    ));
    assert!(matches!(
        MatMut::new(&mut c, 2, 3, 3),
        Err(GemmError::BadOperand { .. })
    ));

    let bv = MatRef::new(&b, 3, 2, 2).unwrap();
    let mut tiny = [0u8; 8];
    let err = gemm::sgemm(
        isa,
        1.0,
        av,
        BMatrix::Plain(bv),
        0.0,
        MatMut::new(&mut c, 2, 2, 2).unwrap(),
        &Epilogue::new(),
        &mut tiny,
    );
    assert!(
        matches!(err, Err(GemmError::BufferTooSmall { .. })),
        "{err:?}"
    );
    assert_eq!(c, [0.0; 4], "nothing written on error");

    let short_bias = [1.0f32];
    let err = gemm::sgemm(
        isa,
        1.0,
        av,
        BMatrix::Plain(bv),
        0.0,
        MatMut::new(&mut c, 2, 2, 2).unwrap(),
        &Epilogue::new().bias(&short_bias),
        &mut scratch,
    );
    assert!(
        matches!(err, Err(GemmError::BadOperand { what: "bias", .. })),
        "{err:?}"
    );

    let mut mem = vec![0u8; 16];
    let err = PackedB::pack_into(&b, 2, 3, 2, isa, &mut mem);
    assert!(
        matches!(err, Err(GemmError::BufferTooSmall { .. })),
        "{err:?}"
    );

    if isa != Isa::Scalar {
        let packed = PackedB::new(&b, 2, 3, 2, Isa::Scalar).unwrap();
        let err = gemm::sgemm(
            isa,
            1.0,
            av,
            BMatrix::Packed(&packed),
            0.0,
            MatMut::new(&mut c, 2, 2, 2).unwrap(),
            &Epilogue::new(),
            &mut scratch,
        );
        assert!(
            matches!(err, Err(GemmError::PackedIsaMismatch { .. })),
            "{err:?}"
        );
    }
}

#[test]
fn pack_into_caller_memory_matches_owned() {
    for isa in Isa::available() {
        let (k, n) = (13, 50);
        let b = fill(k * n, 9);
        let owned = PackedB::new(&b, n, k, n, isa).unwrap();
        let mut mem = vec![0u8; PackedB::bytes_needed(k, n, isa) + 3];
        // Misalign the caller's buffer on purpose.
        let packed = PackedB::pack_into(&b, n, k, n, isa, &mut mem[3..]).unwrap();
        assert_eq!(packed.panels(), owned.panels());
        assert_eq!(packed.panels().as_ptr() as usize % gemm::PANEL_ALIGN, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes(
        m in 1usize..40,
        n in 1usize..80,
        k in 0usize..90,
        pad in 0usize..4,
        trans_a: bool,
        packed: bool,
        beta in prop::sample::select(vec![0.0f32, 1.0, -0.5]),
        isa_index in 0usize..3,
    ) {
        let isas: Vec<Isa> = Isa::available().collect();
        let isa = isas[isa_index % isas.len()];
        let case = Case { m, n, k, pad, trans_a, packed, beta, ..Case::plain(m, n, k) };
        check(isa, &case, &Runner::Serial);
    }
}
