"""Compensated float32 arithmetic and the float32 certificates built on it, against exact
rational arithmetic (`fractions.Fraction`) and float64 references that never call sparsedict."""

from fractions import Fraction

import jax
import numpy as np
import pytest
from test_certificates import check_honest

import sparsedict as sd
from sparsedict._compensated import combination, split, two_sum
from sparsedict.datasets import sparse_synthetic


def _wide_range(rng, shape):
    """float32 numbers over 40 binary orders of magnitude, both signs."""
    return (rng.standard_normal(shape) * 2.0 ** rng.integers(-20, 20, shape)).astype(np.float32)


def test_two_sum_and_split_are_exact():
    rng = np.random.default_rng(0)
    a, b = _wide_range(rng, 2000), _wide_range(rng, 2000)
    s, e = map(np.asarray, jax.jit(two_sum)(a, b))
    for x, y, p, q in zip(a, b, s, e, strict=True):
        assert Fraction(float(x)) + Fraction(float(y)) == Fraction(float(p)) + Fraction(float(q))
    hi, lo = map(np.asarray, jax.jit(split)(a))
    np.testing.assert_array_equal(hi.astype(np.float64) + lo.astype(np.float64), a)
    # both parts have at most 12 significand bits, so products of parts are exact in float32
    for part in (hi, lo):
        mant, _ = np.frexp(part.astype(np.float64))
        np.testing.assert_array_equal(np.ldexp(mant, 12), np.round(np.ldexp(mant, 12)))


@pytest.mark.parametrize(
    ("m", "d", "used"), [(1, 5, 1), (64, 64, 64), (257, 256, 257), (64, 32, 9)]
)
def test_combination_is_as_accurate_as_its_bound(m, d, used):
    rng = np.random.default_rng(m + used)
    start = _wide_range(rng, d)
    A = rng.standard_normal((m, d)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    # low parts of the coefficients in twice the precision, as the polished codes carry them
    b_lo = (b * np.finfo(np.float32).eps * rng.uniform(-0.5, 0.5, m)).astype(np.float32)
    hi, lo, bound = map(np.asarray, jax.jit(combination)(start, A, b, b_lo, used))
    for i in range(0, d, max(1, d // 24)):
        exact = Fraction(float(start[i])) + sum(
            Fraction(float(A[j, i])) * (Fraction(float(b[j])) + Fraction(float(b_lo[j])))
            for j in range(used)
        )
        err = abs(exact - Fraction(float(hi[i])) - Fraction(float(lo[i])))
        assert err <= Fraction(float(bound[i]))
        # twice the working precision: far below the plain float32 rounding of the same sum
        scale = abs(float(start[i])) + float(np.abs(A[:, i] * b).sum())
        assert float(err) <= 1e-11 * scale
        # and the bound itself is far below the plain rounding (u times the scale)
        assert bound[i] <= 1e-9 * scale


def test_float32_readme_example_is_certified_at_the_default_tol():
    # the README's example in float32: the plain rounding bound (about 4e-4 relative) certified
    # no signal at the default tol 1e-6; polished codes certified at the dual point of their
    # refinement in twice the precision certify them, and check_honest bounds every reported
    # gap by an independent float64 suboptimality
    X, D, _ = sparse_synthetic(n=400, d=64, k=256)
    lam = np.full(400, 0.2, np.float32)
    res = sd.sparse_code(X, D, lam)
    check_honest(res, X, D, lam, 1e-6)
    assert float(np.mean(np.asarray(res.converged))) >= 0.99
    # the canonical gap of float32 codes is first order in their rounding, u |aD|^2 / P (median
    # 2e-7 here); the refined dual point removes that term
    assert float(np.median(np.asarray(res.relative_gap))) <= 5e-8
