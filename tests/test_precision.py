"""Mixed precision (`sparse_code(..., matmul_dtype=...)`): which problem is solved and certified.

References: scikit-learn (float64) on the rounded problem `(X, D.astype(matmul_dtype))`, the gap
recomputed from its definition in float64 on the rounded and on the original problem, a derived
bound on the original-problem gap, and float64 products for the split matmul.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problems import optimum_lower_bound, random_problem, reference_codes, reference_gap
from tolerances import CODES_F32, CODES_F64, GAP_F32

import sparsedict as sd
from sparsedict._coding._problem import piece_count, split_matmul

LAM = 0.2
# Unit roundoff 2^-t (t significand bits): |D - D.astype(dtype)| <= u |D| entrywise.
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24}


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def rounded(D, dtype):
    """The stored dictionary, as float64 numbers."""
    return np.asarray(jnp.asarray(D).astype(dtype).astype(jnp.float64))


def original_gap_bound(X, D, D_low, A, lam, u):
    r"""Upper bound on the gap for (X, D) of codes A solved for (X, D_low), |D - D_low| <= u|D|.

    With $r_l = x - aD_l$, $g_l = D_l r_l$: $g - g_l = E r_l - D(aE)$, $E = D - D_l$, so
    $\|g - g_l\|_\infty \le \delta = u \max_k\|d_k\| (\|r_l\| + \sum_j a_j\|d_j\|)$. With
    $\eta = (\max_k g_{l,k} - \lambda)_+$ and $t = (\eta + \delta)/\lambda \ge 1 - s$:
    $\mathrm{gap} \le \sum_k a_k|\lambda - g_{l,k}| + \delta\|a\|_1 + t(\lambda + \eta +
    \delta)\|a\|_1
    + \tfrac12 t^2 (\|r_l\| + u\sum_j a_j\|d_j\|)^2$; at the rounded optimum, about
    $2\delta\|a\|_1 = 2u\|a\|_1(\|r_l\| + \|a\|_1)$ for unit atoms.
    """
    X, D, D_low, A = (np.asarray(v, np.float64) for v in (X, D, D_low, A))
    R = X - A @ D_low
    G = R @ D_low.T
    norms = np.linalg.norm(D, axis=1)
    l1, r_norm, weighted = A.sum(1), np.linalg.norm(R, axis=1), A @ norms
    delta = u * norms.max() * (r_norm + weighted)
    eta = np.maximum(G.max(1) - lam, 0.0)
    t = (eta + delta) / lam
    violation = np.sum(A * np.abs(lam - G), axis=1)
    return (
        violation
        + delta * l1
        + t * (lam + eta + delta) * l1
        + 0.5 * t**2 * (r_norm + u * weighted) ** 2
    )


# --- the split product -------------------------------------------------------------------------

PIECES = {
    ("float32", "bfloat16"): 3,
    ("float32", "float16"): 3,
    ("float64", "float32"): 3,
    ("float64", "bfloat16"): 7,
}


@pytest.mark.parametrize("work, low", sorted(PIECES))
def test_split_matmul_is_exact_to_working_precision(rng, work, low):
    # rows of very different scales: beyond float16's range (6.5e4) and near its underflow
    v = rng.standard_normal((5, 40)) * np.array([1e-6, 1e-2, 1.0, 1e3, 1e7])[:, None]
    v[2, :5] = 0.0
    M = rounded(rng.standard_normal((40, 7)), low)
    got = jax.jit(split_matmul)(jnp.asarray(v, work), jnp.asarray(M, low))
    assert got.dtype == jnp.dtype(work)
    exact = np.asarray(v, work).astype(np.float64) @ M
    # working-precision rounding of a length-40 product (plus the split's 2^-pt remainder)
    scale = np.abs(v) @ np.abs(M)
    assert np.all(np.abs(np.asarray(got, np.float64) - exact) <= 64 * np.finfo(work).eps * scale)
    assert piece_count(jnp.dtype(work), jnp.dtype(low)) == PIECES[work, low]


# --- float32 inputs, bfloat16 / float16 storage ------------------------------------------------


@pytest.fixture(scope="module")
def float32_problem():
    rng = np.random.default_rng(8)
    X, D = random_problem(rng, n=16, d=8, k=20)
    return X.astype(np.float32), D.astype(np.float32)


@pytest.mark.parametrize(
    "low, solver", [("bfloat16", "active_set"), ("bfloat16", "fista"), ("float16", "fista")]
)
def test_codes_solve_and_certify_the_rounded_problem(float32_problem, low, solver):
    X, D = float32_problem
    res = sd.sparse_code(
        X, D, LAM, solver=solver, tol=GAP_F32, matmul_dtype=jnp.dtype(low), max_steps=5000
    )
    assert res.codes.dtype == res.gap.dtype == jnp.float32
    D_low = rounded(D, low)
    np.testing.assert_allclose(
        res.codes, reference_codes(X.astype(np.float64), D_low, LAM), atol=CODES_F32
    )
    # float32 results are polished and certified in compensated arithmetic: 1e-6 is reached
    assert np.all(res.relative_gap <= GAP_F32)
    # the reported certificate is that of the rounded problem: it bounds the suboptimality
    # against scikit-learn's float64 optimum for D_low, and is never above the canonical gap of
    # the same codes beyond float32 rounding
    A = np.asarray(res.codes, np.float64)
    gap_low, primal = reference_gap(X, D_low, A, LAM)
    suboptimality = primal - optimum_lower_bound(X, D_low, LAM)
    assert np.all(np.asarray(res.gap, np.float64) >= suboptimality - 1e-13 * primal)
    x_norm = np.linalg.norm(X, axis=1)
    rounding = 64 * np.finfo(np.float32).eps * (A.sum(1) * x_norm + x_norm**2)
    assert np.all(np.asarray(res.gap) <= gap_low + rounding)
    # on the original problem: larger, and within the derived rounding bound
    gap, _ = reference_gap(X, D, A, LAM)
    bound = original_gap_bound(X, D, D_low, A, LAM, UNIT_ROUNDOFF[low])
    assert np.all(gap <= bound)
    assert np.median(gap / primal) > 10 * np.median(gap_low / primal)
    assert np.median(bound / primal) < 0.5  # the bound is not vacuous


def test_float64_inputs_with_float32_storage(rng):
    X, D = random_problem(rng, n=12, d=8, k=20)
    res = sd.sparse_code(X, D, LAM, tol=1e-12, matmul_dtype=jnp.float32)
    assert res.codes.dtype == jnp.float64 and bool(res.converged.all())
    D_low = rounded(D.astype(np.float32), "float32")
    np.testing.assert_allclose(res.codes, reference_codes(X, D_low, LAM), atol=CODES_F64)
    gap_low, primal = reference_gap(X, D_low, res.codes, LAM)
    np.testing.assert_allclose(res.gap, gap_low, atol=1e-12 * primal.max())
    gap, _ = reference_gap(X, D, res.codes, LAM)
    assert np.all(gap <= original_gap_bound(X, D, D_low, res.codes, LAM, UNIT_ROUNDOFF["float32"]))
    assert np.max(gap / primal) < 1e-5


def test_default_and_same_dtype_are_unchanged(float32_problem):
    X, D = float32_problem
    plain = sd.sparse_code(X, D, LAM, solver="fista")
    for same in (None, jnp.float32, "float32"):
        res = sd.sparse_code(X, D, LAM, solver="fista", matmul_dtype=same)
        for name in ("codes", "gap", "primal", "steps"):
            np.testing.assert_array_equal(getattr(res, name), getattr(plain, name))


# --- transforms ---------------------------------------------------------------------------------


def test_jit_vmap_grad_and_no_recompilation(float32_problem, monkeypatch):
    import sparsedict._coding._driver as driver

    X, D = float32_problem
    code = functools.partial(sd.sparse_code, solver="fista", matmul_dtype=jnp.bfloat16)
    traces = []
    original = driver._solve_all
    monkeypatch.setattr(driver, "_solve_all", lambda *a: traces.append(1) or original(*a))
    eager = [
        code(X, D, lam, tol=tol).codes
        for lam, tol in [(0.1, 1e-6), (np.full(16, 0.3, np.float32), 1e-5)]
    ]
    assert len(traces) <= 1  # lam and tol are arrays (an earlier test may have compiled it)
    D_low = rounded(D, "bfloat16")
    jitted = jax.jit(lambda X, D, lam: code(X, D, lam).codes)(X, D, 0.1)
    np.testing.assert_allclose(jitted, eager[0], atol=1e-6)
    lams = jnp.array([0.1, 0.3], jnp.float32)
    path = jax.vmap(lambda lam: code(X, D, lam).codes)(lams)
    for lam, codes in zip(lams, path, strict=False):
        np.testing.assert_allclose(
            codes, reference_codes(X.astype(np.float64), D_low, float(lam)), atol=CODES_F32
        )
    # implicit derivatives stay in the working dtype (original D) at the returned codes:
    # d sum(a) / d lam = -sum_i 1^T (G_SS)^-1 1 on each support S, G = D D^T
    grad = jax.grad(lambda lam: jnp.sum(code(X, D, lam).codes))
    G = D.astype(np.float64) @ D.T.astype(np.float64)
    expected = -sum(
        np.linalg.solve(G[np.ix_(s, s)], np.ones(s.sum())).sum() for s in np.asarray(eager[0]) > 0
    )
    np.testing.assert_allclose(grad(jnp.float32(0.1)), expected, rtol=1e-3)


# --- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "matmul_dtype, error, message",
    [
        (jnp.int8, TypeError, "matmul_dtype must be None or one of"),
        ("float8_e4m3fn", TypeError, "matmul_dtype must be None or one of"),
        ("not a dtype", TypeError, "matmul_dtype must be None or one of"),
        (jnp.float64, ValueError, "matmul_dtype=float64 is wider"),
    ],
)
def test_bad_matmul_dtype(float32_problem, matmul_dtype, error, message):
    X, D = float32_problem
    with pytest.raises(error, match=message):
        sd.sparse_code(X, D, LAM, matmul_dtype=matmul_dtype)


def test_dictionary_that_does_not_fit_raises(float32_problem):
    X, D = float32_problem  # (an eqx.error_if: it raises under jit too)
    with pytest.raises(Exception, match="D does not fit in matmul_dtype=float16"):
        big = D * np.float32(1e5)  # entries beyond float16's 65504
        jax.block_until_ready(
            sd.sparse_code(X, big, LAM, solver="fista", matmul_dtype=jnp.float16).codes
        )
