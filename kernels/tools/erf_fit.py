"""Fits the rational erf approximation in `kernels/src/simd.rs`.

erf(x) ~ x P(x^2) / Q(x^2) on [0, 3.9] (odd, so [-3.9, 3.9]; beyond it
erf is 1 within 3.5e-8), P of degree 6, Q of degree 4 with Q(0) = 1.
Linearised least squares (x P - erf Q = 0, weighted by 1 / Q of the last
pass) with Lawson reweighting towards the minimax fit; then checks the
f32-rounded coefficients, evaluated in f32 as the kernels do, on [-8, 8].

Run: python3 kernels/tools/erf_fit.py (numpy only; bench/peers/.venv has it).
Prints the coefficients and the f32 maximum absolute error (4.0e-7).
"""

import math

import numpy as np

CLAMP = 3.9
P_DEGREE, Q_DEGREE = 6, 4


def fit(iterations=60):
    xs = np.linspace(0.0, CLAMP, 20001)
    u = xs * xs
    f = np.array([math.erf(x) for x in xs])
    weight = np.ones_like(xs)
    q_last = np.ones_like(xs)
    best = None
    for _ in range(iterations):
        cols = [xs * u**i for i in range(P_DEGREE + 1)]
        cols += [-f * u**j for j in range(1, Q_DEGREE + 1)]
        a = np.stack(cols, 1)
        row_weight = np.sqrt(weight) / q_last
        sol, *_ = np.linalg.lstsq(a * row_weight[:, None], f * row_weight, rcond=None)
        p = sol[: P_DEGREE + 1]
        q = np.concatenate([[1.0], sol[P_DEGREE + 1 :]])
        big_q = sum(q[j] * u**j for j in range(Q_DEGREE + 1))
        err = xs * sum(p[i] * u**i for i in range(P_DEGREE + 1)) / big_q - f
        worst = np.abs(err).max()
        if best is None or worst < best[0]:
            best = (worst, p.copy(), q.copy())
        q_last = np.abs(big_q)
        weight = weight * np.abs(err)
        weight /= weight.sum()
    return best[1], best[2]


def horner32(coeffs, u):
    acc = np.full_like(u, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc = (acc * u + c).astype(np.float32)
    return acc


def erf32(p, q, xs):
    x = np.clip(xs.astype(np.float32), np.float32(-CLAMP), np.float32(CLAMP))
    u = x * x
    return (x * horner32(p, u) / horner32(q, u)).astype(np.float32)


def main():
    p, q = fit()
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    print("P:", ", ".join(repr(float(c)) for c in p32))
    print("Q:", ", ".join(repr(float(c)) for c in q32))
    xs = np.linspace(-8.0, 8.0, 400001).astype(np.float32)
    ref = np.array([math.erf(float(x)) for x in xs])
    print("f32 max abs error:", np.abs(erf32(p32, q32, xs) - ref).max())


if __name__ == "__main__":
    main()
