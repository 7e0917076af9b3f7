"""Sparse coding: agreement with scikit-learn / scipy, honest certificates, KKT, masks,
transforms."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from problems import (
    lasso_objective,
    optimum_lower_bound,
    random_problem,
    reference_codes,
    reference_gap,
    unit_rows,
)
from tolerances import CODES_F32, CODES_F64, GAP_F32, GAP_F64, OBJECTIVE_F64

import sparsedict as sd

SOLVERS = ["active_set", "fista", "cd"]
MAX_STEPS = 20_000


def solve(X, D, lam, solver, **kw):
    kw.setdefault("tol", GAP_F64)
    return sd.sparse_code(X, D, lam, solver=solver, max_steps=MAX_STEPS, **kw)


@pytest.fixture
def rng(request):
    # Fresh inputs per test, reproducible from the test's name.
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", [(12, 8), (8, 20)], ids=["tall", "wide"])
def test_matches_sklearn(rng, solver, shape):
    d, k = shape
    X, D = random_problem(rng, n=16, d=d, k=k)
    lam = 0.1 * np.abs(X @ D.T).max()
    res = solve(X, D, lam, solver)
    ref = reference_codes(X, D, lam)
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.codes, ref, atol=CODES_F64)
    assert res.codes.min() >= 0


@pytest.mark.parametrize("solver", SOLVERS)
def test_gap_is_honest_and_kkt_holds(rng, solver):
    X, D = random_problem(rng, n=16, d=8, k=20)
    lam = rng.uniform(0.05, 0.5, size=16)  # per-signal lam
    res = solve(X, D, lam, solver)
    gap, primal = reference_gap(X, D, res.codes, lam)
    np.testing.assert_allclose(res.gap, gap, atol=1e-12 * primal.max())
    np.testing.assert_allclose(res.primal, primal, rtol=1e-12)
    assert np.all(res.relative_gap <= GAP_F64)
    # KKT from the definition: a >= 0, g <= lam, g = lam on the support
    g = (X - res.codes @ D) @ D.T
    assert np.all(g <= lam[:, None] + 1e-7)
    active = np.asarray(res.codes) > 1e-9
    np.testing.assert_allclose(
        np.where(active, g, lam[:, None]), np.broadcast_to(lam[:, None], g.shape), atol=1e-6
    )
    assert np.all(res.kkt <= 1e-6)
    np.testing.assert_allclose(res.codes, reference_codes(X, D, lam), atol=CODES_F64)


def test_gap_bounds_suboptimality(rng):
    X, D = random_problem(rng, n=10, d=8, k=16)
    lam = 0.2
    optimum = lasso_objective(X, D, reference_codes(X, D, lam), lam)
    rough = np.abs(rng.standard_normal((10, 16))) * 0.3
    gap = np.asarray(sd.duality_gap(X, D, rough, lam))
    primal = lasso_objective(X, D, rough, lam)
    assert np.all(gap >= 0)
    assert np.all(primal - optimum <= gap + 1e-12)
    np.testing.assert_allclose(gap, reference_gap(X, D, rough, lam)[0], rtol=1e-10)


@pytest.mark.parametrize("solver", SOLVERS)
def test_large_lam_gives_zero_codes(rng, solver):
    X, D = random_problem(rng, n=8, d=8, k=12)
    lam = np.asarray(sd.lam_max(X, D)) * rng.uniform(1.0, 2.0, size=8)
    res = solve(X, D, lam, solver)
    np.testing.assert_array_equal(res.codes, 0.0)
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.gap, 0.0, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_lam_zero_is_nnls(rng, solver):
    X, D = random_problem(rng, n=8, d=12, k=6)  # tall: NNLS has a unique solution
    X = X + 0.3 * rng.standard_normal(X.shape)
    res = solve(X, D, 0.0, solver, tol=1e-10)
    np.testing.assert_allclose(res.codes, reference_codes(X, D, 0.0), atol=1e-5)
    # At lam = 0 the dual scaling min(1, lam / max_k g_k) jumps from 1 to 0 where max_k g_k
    # crosses 0, which is where it sits at the optimum: no finite-precision bound certifies the
    # exact gap there, so the codes are solved to the rounding floor and flagged precision_limit.
    assert bool(res.converged.all()) or res.result == sd.RESULTS.precision_limit
    gap, primal = reference_gap(X, D, res.codes, 0.0)
    assert np.all(res.gap >= gap * (1 - 1e-12))


@pytest.mark.parametrize("solver", SOLVERS)
def test_duplicated_atoms(rng, solver):
    X, D = random_problem(rng, n=12, d=10, k=8)
    D_dup = np.concatenate([D, D[:3]])  # singular Gram matrix
    lam = 0.15
    res = solve(X, D_dup, lam, solver)
    assert np.all(np.isfinite(res.codes))
    assert bool(res.converged.all())
    # codes are not unique, the objective is
    optimum = lasso_objective(X, D, reference_codes(X, D, lam), lam)
    np.testing.assert_allclose(
        lasso_objective(X, D_dup, np.asarray(res.codes), lam), optimum, rtol=OBJECTIVE_F64
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_masked_padding_changes_nothing(rng, solver):
    X, D = random_problem(rng, n=12, d=8, k=10)
    lam = 0.1
    padded = np.concatenate([D, np.zeros((3, 8)), unit_rows(rng.standard_normal((3, 8)))])
    mask = np.array([True] * 10 + [False] * 6)
    res = solve(X, padded, lam, solver, atom_mask=mask)
    plain = solve(X, D, lam, solver)
    np.testing.assert_array_equal(res.codes[:, 10:], 0.0)
    np.testing.assert_allclose(res.codes[:, :10], plain.codes, atol=CODES_F64)
    np.testing.assert_allclose(res.gap, plain.gap, atol=1e-12)
    # a masked atom that would be used never enters the dual check
    best = unit_rows(X[:1])
    D2 = np.concatenate([D, best])
    mask2 = np.array([True] * 10 + [False])
    res2 = solve(X, D2, lam, solver, atom_mask=mask2)
    np.testing.assert_allclose(res2.gap, plain.gap, atol=1e-12)
    np.testing.assert_array_equal(res2.codes[:, 10], 0.0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32(rng, solver):
    X, D = random_problem(rng, n=16, d=8, k=20)
    lam = 0.2
    res = sd.sparse_code(
        X.astype(np.float32),
        D.astype(np.float32),
        lam,
        solver=solver,
        tol=GAP_F32,
        max_steps=MAX_STEPS,
    )
    assert res.codes.dtype == jnp.float32
    # float32 codes are polished and certified at the dual point of their refinement in twice
    # the precision (the sparse-coding guide): 1e-6 is within reach
    assert bool(res.converged.all())
    assert np.all(res.relative_gap <= GAP_F32)
    np.testing.assert_allclose(res.codes, reference_codes(X, D, lam), atol=CODES_F32)
    # the reported gap bounds the suboptimality against scikit-learn's float64 optimum, and is
    # never above the canonical gap of the same codes (beyond float32 rounding of the
    # correlations, eps * (|a|_1 ||x|| + ||x||^2))
    X32, D32, A32 = X.astype(np.float32), D.astype(np.float32), np.asarray(res.codes)
    gap, primal = reference_gap(X32, D32, A32, lam)
    suboptimality = primal - optimum_lower_bound(X32, D32, lam)
    reference_rounding = 1e-13 * primal
    assert np.all(np.asarray(res.gap, np.float64) >= suboptimality - reference_rounding)
    x_norm = np.linalg.norm(X32, axis=1)
    rounding = 64 * np.finfo(np.float32).eps * (A32.sum(1) * x_norm + x_norm**2)
    assert np.all(np.asarray(res.gap) <= gap + rounding)


@pytest.mark.parametrize("solver", SOLVERS)
def test_warm_start(rng, solver):
    X, D = random_problem(rng, n=12, d=8, k=16)
    lam = 0.1
    cold = solve(X, D, lam, solver)
    warm = solve(X, D, lam, solver, init=cold.codes)
    # one block polishes the warm start; a first-order method may need a second to re-certify
    assert int(warm.steps.max()) <= 2 * solver_check_every(solver)
    assert int(warm.steps.max()) <= int(cold.steps.max())
    np.testing.assert_allclose(warm.codes, cold.codes, atol=CODES_F64)
    nearby = solve(X, D, lam * 1.1, solver, init=cold.codes)
    np.testing.assert_allclose(nearby.codes, reference_codes(X, D, lam * 1.1), atol=CODES_F64)


def solver_check_every(solver):
    return sd.sparse_code.__globals__["SOLVERS"][solver]().check_every


def test_single_signal_and_jit_vmap(rng):
    X, D = random_problem(rng, n=6, d=8, k=12)
    lam = 0.1
    batch = solve(X, D, lam, "active_set")
    one = solve(X[2], D, lam, "active_set")
    np.testing.assert_allclose(one.codes, batch.codes[2], atol=1e-12)
    jitted = jax.jit(lambda X, D, lam: sd.sparse_code(X, D, lam, tol=GAP_F64).codes)(X, D, lam)
    np.testing.assert_allclose(jitted, batch.codes, atol=1e-12)
    # vmap over lam: a regularisation path in one call
    lams = jnp.array([0.05, 0.1, 0.3])
    path = jax.vmap(lambda lam_i: sd.sparse_code(X, D, lam_i, tol=GAP_F64).codes)(lams)
    for lam_i, codes in zip(lams, path, strict=False):
        np.testing.assert_allclose(codes, reference_codes(X, D, float(lam_i)), atol=CODES_F64)
    # vmap over signals
    rows = jax.vmap(lambda x: sd.sparse_code(x, D, lam, tol=GAP_F64).codes)(X)
    np.testing.assert_allclose(rows, batch.codes, atol=1e-12)
    gaps = jax.jit(jax.vmap(lambda A: sd.duality_gap(X, D, A, lam)))(
        jnp.stack([batch.codes, 2 * batch.codes])
    )
    np.testing.assert_allclose(
        gaps[1], reference_gap(X, D, 2 * np.asarray(batch.codes), lam)[0], rtol=1e-10
    )


def test_no_recompilation_when_lam_tol_or_data_change(rng, monkeypatch):
    import sparsedict._coding._driver as driver

    traces = []
    original = driver._solve_all
    monkeypatch.setattr(driver, "_solve_all", lambda *a: traces.append(1) or original(*a))
    X, D = random_problem(rng, n=5, d=7, k=11)  # shapes used by no other test
    for lam, tol, scale in [(0.1, 1e-8, 1.0), (0.3, 1e-6, 2.0), (np.full(5, 0.2), 1e-9, 0.5)]:
        sd.sparse_code(X * scale, D, lam, tol=tol, max_steps=500 + int(scale))
    assert len(traces) == 1


def test_status_and_throw(rng):
    X, D = random_problem(rng, n=8, d=8, k=16)
    res = sd.sparse_code(X, D, 0.05, solver="fista", tol=1e-14, max_steps=3)
    assert not bool(res.converged.all())
    assert res.result == sd.RESULTS.max_steps_reached
    assert "max_steps" in res.summary() or "reached" in res.summary()
    with pytest.raises(Exception, match="max_steps"):
        sd.sparse_code(X, D, 0.05, solver="fista", tol=1e-14, max_steps=3, throw=True)
    ok = solve(X, D, 0.05, "active_set")
    assert ok.result == sd.RESULTS.successful
    assert "converged" in ok.summary()


# --- bad input ---------------------------------------------------------------------------------


def _good(rng):
    X, D = random_problem(rng, n=4, d=5, k=6)
    return X, D


BAD_INPUTS = {
    "X rank": (lambda X, D: dict(X=X[None]), ValueError, "X must have shape"),
    "D rank": (lambda X, D: dict(D=D[0]), ValueError, "D must have shape"),
    "d mismatch": (lambda X, D: dict(D=D[:, :4]), ValueError, "features"),
    "empty X": (lambda X, D: dict(X=X[:0]), ValueError, "empty"),
    "complex X": (lambda X, D: dict(X=X.astype(complex)), TypeError, "X is complex"),
    "bool D": (lambda X, D: dict(D=D > 0), TypeError, "D must hold numbers"),
    "NaN X": (
        lambda X, D: dict(X=np.where(np.eye(4, 5) > 0, np.nan, X)),
        Exception,
        "X contains NaN",
    ),
    "inf D": (
        lambda X, D: dict(D=np.where(np.eye(6, 5) > 0, np.inf, D)),
        Exception,
        "D contains NaN",
    ),
    "negative lam": (lambda X, D: dict(lam=-0.1), Exception, "lam must be >= 0"),
    "nan lam": (lambda X, D: dict(lam=np.nan), Exception, "lam must be finite"),
    "lam shape": (lambda X, D: dict(lam=np.ones(3)), ValueError, "one value per signal"),
    "zero atom": (
        lambda X, D: dict(D=np.concatenate([D, np.zeros((1, 5))])),
        Exception,
        "zero-norm atom",
    ),
    "mask shape": (
        lambda X, D: dict(atom_mask=np.ones(3, bool)),
        ValueError,
        "atom_mask must have shape",
    ),
    "negative init": (
        lambda X, D: dict(init=-np.ones((4, 6))),
        Exception,
        "init must be nonnegative",
    ),
    "init shape": (lambda X, D: dict(init=np.ones((4, 5))), ValueError, "init must have shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_bad_input_raises(rng, case, under_jit):
    X, D = _good(rng)
    make, error, message = BAD_INPUTS[case]
    args = dict(X=X, D=D, lam=0.1, init=None, atom_mask=None)
    args.update(make(X, D))

    def call(X, D, lam, init, atom_mask):
        return sd.sparse_code(X, D, lam, init=init, atom_mask=atom_mask).codes

    if under_jit:
        call = jax.jit(call)
    with pytest.raises(error, match=message):
        jax.block_until_ready(call(**args))


def test_masked_zero_atom_is_fine(rng):
    X, D = _good(rng)
    D0 = np.concatenate([D, np.zeros((1, 5))])
    res = solve(X, D0, 0.1, "active_set", atom_mask=np.array([True] * 6 + [False]))
    assert bool(res.converged.all())


def test_duality_gap_rejects_bad_codes(rng):
    X, D = _good(rng)
    with pytest.raises(ValueError, match="codes must have shape"):
        sd.duality_gap(X, D, np.ones((4, 5)), 0.1)
    with pytest.raises(Exception, match="codes must be nonnegative"):
        sd.duality_gap(X, D, -np.ones((4, 6)), 0.1)


@pytest.mark.parametrize(
    "solver",
    [
        sd.ActiveSet(min_support=2, start_support=1, warm_start_steps=0),
        sd.ActiveSet(min_support=2, warm_start_steps=3),
    ],
    ids=["screened", "fista_start"],
)
def test_overflow_moves_signals_to_larger_buffers(rng, solver):
    # Supports of 4 to 10 atoms: every signal outgrows the buffers of 2 and 4 slots.
    X, D = random_problem(rng, n=24, d=12, k=30, density=0.3)
    lam = 0.05 * np.abs(X @ D.T).max()
    res = solve(X, D, lam, solver)
    ref = reference_codes(X, D, lam)
    assert (ref > 0).sum(1).max() > 4
    assert bool(res.converged.all())
    np.testing.assert_allclose(res.codes, ref, atol=CODES_F64)


def test_buffer_too_small_is_never_reported_converged(rng):
    X, D = random_problem(rng, n=16, d=12, k=30, density=0.3)
    lam = 0.05 * np.abs(X @ D.T).max()
    support = (reference_codes(X, D, lam) > 0).sum(1)
    res = sd.sparse_code(X, D, lam, solver=sd.ActiveSet(max_support=3, min_support=2), tol=GAP_F64)
    assert np.any(support > 3)
    np.testing.assert_array_equal(np.asarray(res.converged), support <= 3)
    assert res.result != sd.RESULTS.successful


@pytest.mark.parametrize("solver", ["active_set", "fista"])
def test_compaction_equals_solving_each_signal_alone(rng, solver):
    # Enough signals for several compacted rounds (batches of 64 and 16): each signal's trajectory
    # does not depend on the others, so its codes and step count are those of a solve alone (up
    # to the rounding of products of other batch shapes: a block of steps more or less).
    X, D = random_problem(rng, n=150, d=10, k=24)
    lam = rng.uniform(0.02, 0.3, size=150) * np.abs(X @ D.T).max()
    kw = dict(tol=GAP_F64, max_steps=MAX_STEPS)
    batch = sd.sparse_code(X, D, lam, solver=solver, **kw)
    steps = np.asarray(batch.steps)
    assert steps.min() < steps.max()  # signals finish at different rounds
    picks = [int(np.argmin(steps)), int(np.argmax(steps)), 7, 77]
    for i in picks:
        alone = sd.sparse_code(X[i], D, lam[i], solver=solver, **kw)
        every = solver_check_every(solver)
        assert abs(int(alone.steps) - steps[i]) <= every
        np.testing.assert_allclose(batch.codes[i], alone.codes, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(batch.codes, reference_codes(X, D, lam), atol=CODES_F64)


def _correlated_problem(rng, n=24, d=16, k=48):
    # atoms around a few common directions (as image-patch dictionaries): block pivoting cycles
    centres = unit_rows(rng.standard_normal((4, d)))
    D = unit_rows(centres[rng.integers(0, 4, k)] + 0.3 * rng.standard_normal((k, d)))
    A = (rng.random((n, k)) < 0.3) * rng.uniform(0.5, 2.0, (n, k))
    return A @ D + 0.05 * rng.standard_normal((n, d)), D


@pytest.mark.parametrize("adds", [1, 8])
def test_lawson_hanson_with_several_additions_is_exact(rng, adds):
    # No block exchange without progress: Lawson-Hanson from the first non-improving step.
    X, D = _correlated_problem(rng)
    lam = 0.02 * np.abs(X @ D.T).max()
    solver = sd.ActiveSet(full_exchanges=0, lawson_hanson_adds=adds, min_support=4)
    res = solve(X, D, lam, solver)
    assert bool(res.converged.all())
    assert np.all(res.relative_gap <= GAP_F64)
    np.testing.assert_allclose(res.codes, reference_codes(X, D, lam), atol=CODES_F64)


def test_lawson_hanson_additions():
    from sparsedict._coding._active_set import _lh_additions

    excess = jnp.array([0.9, -1.0, 0.2, 1.0, 0.6, 0.5, 0.7])
    violated = excess > 0
    one = _lh_additions(violated, excess, jnp.asarray(False), 8)
    np.testing.assert_array_equal(one, excess == 1.0)  # the largest violator only
    many = _lh_additions(violated, excess, jnp.asarray(True), 8)
    np.testing.assert_array_equal(many, excess >= 0.5)  # within half of the largest
    capped = _lh_additions(violated, excess, jnp.asarray(True), 2)
    assert int(capped.sum()) == 2 and bool(jnp.all(excess[capped] >= 0.5))


def _one_correlated_signal(rng):
    """The dictionary, its operator (with the Gram matrix) and one signal of
    `_correlated_problem`, at lam = 0.02 max |x . d_k|: the state-level Lawson-Hanson tests."""
    from sparsedict._coding._driver import make_operator
    from sparsedict._coding._problem import signals

    X, D = _correlated_problem(rng, n=1)
    lam = 0.02 * np.abs(X @ D.T).max()
    op = make_operator(jnp.asarray(D), None, True)
    sig = jax.tree_util.tree_map(lambda v: v[0], signals(jnp.asarray(X), op, jnp.full(1, lam)))
    return D, op, sig


def test_lawson_hanson_adds_one_atom_once_the_objective_stalls(rng):
    # A full Lawson-Hanson step whose objective is not below the last one (here: -inf) adds a
    # single atom and switches to one addition at a time for good (finite termination).
    D, op, sig = _one_correlated_signal(rng)
    solver = sd.ActiveSet(lawson_hanson_adds=8).stages(op)[-1]
    state = solver.init(op, sig, jnp.zeros(D.shape[0]))
    one_atom = state.passive & (jnp.arange(D.shape[0]) == jnp.argmax(sig.c))
    state = state._replace(passive=one_atom, a=jnp.zeros(D.shape[0]), lawson_hanson=True)
    free = solver.step(op, sig, state)  # full step (z > 0 on one atom), objective falls
    assert bool(free.lh_many) and int(free.passive.sum()) > 2
    stalled = solver.step(op, sig, state._replace(lh_objective=jnp.asarray(-jnp.inf)))
    assert not bool(stalled.lh_many) and int(stalled.passive.sum()) == 2


def test_float64_start_runs_in_float32(rng):
    from sparsedict._coding._active_set import _start_problem
    from sparsedict._coding._driver import make_operator
    from sparsedict._coding._problem import signals

    X, D = random_problem(rng, n=4, d=8, k=40)
    for dtype, start in ((jnp.float64, jnp.float32), (jnp.float32, jnp.float32)):
        op = make_operator(jnp.asarray(D, dtype), None, True)
        sig = signals(jnp.asarray(X, dtype), op, jnp.full(4, 0.1, dtype))
        fast, fast_sig = _start_problem(op, sig)
        assert fast.D.dtype == start and fast_sig.c.dtype == start
        assert fast.gram is None  # k > 2d: correlations from D
        assert float(fast.lipschitz) >= float(op.lipschitz)  # FISTA's step stays below 1/L


def test_lawson_hanson_starts_from_the_start_codes(rng):
    # Out of exchange tries, the fallback starts from the (feasible) starting codes.
    D, op, sig = _one_correlated_signal(rng)
    solver = sd.ActiveSet(full_exchanges=0).stages(op)[-1]
    state = solver.init(op, sig, jnp.zeros(D.shape[0]))
    assert bool(jnp.any(state.start > 0))
    # out of tries, no progress possible (best = 0), and some index infeasible at the start
    stuck = state._replace(tries=jnp.asarray(0, jnp.int32), best=jnp.asarray(0, jnp.int32))
    new = solver.step(op, sig, stuck)
    assert bool(new.lawson_hanson) and not bool(new.exact)
    np.testing.assert_array_equal(new.a, state.start)
    np.testing.assert_array_equal(new.passive, state.start > 0)
