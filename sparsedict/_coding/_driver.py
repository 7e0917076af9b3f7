"""The coding driver: the only loop for sparse coding.

`sparse_code` validates its arguments, builds the shared dictionary operator, and steps the
signals in blocks: a fixed inner loop of `solver.check_every` steps (written for one signal,
batched with `vmap`), then a certificate check. A signal stops when its relative duality gap is at
most `tol`, when its state stops changing, or at `max_steps`. Work follows the work left: each
round of a `while_loop` gathers the live signals into a static batch (n/8 but at least 64, or
16 for the last stragglers), steps it and scatters it back, so a finished signal stops costing. On
a CPU the signals go through in cache-sized chunks (`chunk_size`) for at most `FIRST_PASS_STEPS`
steps, and the few that need more are then gathered from every chunk and finished together
(`_solve_in_chunks`); on accelerators all signals form one chunk. A solver may come
as a ladder of stages (`solver.stages`, e.g. support buffers of growing size); a signal flagged by
its stage's `overflow` moves on to the next one. `lam`, `tol` and `max_steps` are arrays:
changing them never recompiles.

With a `matmul_dtype`, the dictionary is stored rounded to that dtype and every product with it
runs on narrow operands with working-dtype accumulation, exact to working precision for the
rounded dictionary (`_problem.py`); the few working-dtype products left (with the Gram matrix, in
the support solves) are pinned to full precision, so the certificates are those of the rounded
problem on every backend.
"""

import contextlib
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, DTypeLike, Float

from .. import _validation as check
from .._objective import kkt_residual
from ._active_set import ActiveSet
from ._base import AbstractCodingSolver
from ._compensated_certificate import (
    RefinedCodes,
    compensated_certificate,
    compensated_size,
    compensated_terms,
    moved,
    polish,
)
from ._coordinate_descent import CoordinateDescent
from ._fista import FISTA
from ._implicit import implicit_codes
from ._problem import DictionaryOperator, atom_norm_bounds, gram, signals
from ._result import RESULTS, CodingResult, coding_result

SOLVERS = {"active_set": ActiveSet, "fista": FISTA, "cd": CoordinateDescent}


def _solver(solver) -> AbstractCodingSolver:
    if isinstance(solver, AbstractCodingSolver):
        return solver
    if isinstance(solver, str) and solver in SOLVERS:
        return SOLVERS[solver]()
    raise ValueError(
        f"solver must be one of {sorted(SOLVERS)} or a solver instance, got {solver!r}"
    )


def default_tol(dtype) -> float:
    """Relative-gap tolerance: 1e-6 in float32, 1e-10 in float64."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-6


MATMUL_DTYPES = ("bfloat16", "float16", "float32")


def check_matmul_dtype(matmul_dtype, dtype):
    """`matmul_dtype` as a dtype narrower than the working `dtype`, or None (same as `dtype`)."""
    if matmul_dtype is None:
        return None
    expected = "matmul_dtype must be None or one of jnp.bfloat16, jnp.float16, jnp.float32"
    try:
        low = jnp.dtype(matmul_dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{expected}, got {matmul_dtype!r}") from None
    work = jnp.dtype(dtype)
    if jnp.issubdtype(low, jnp.floating) and low.itemsize > work.itemsize:
        raise ValueError(
            f"matmul_dtype={low.name} is wider than the dtype of X and D ({work.name}); "
            "use bfloat16 or float16 for float32 inputs"
        )
    if low.name not in MATMUL_DTYPES:
        raise TypeError(f"{expected}, got {low.name}")
    return None if low == work else low


def make_operator(D, atom_mask, use_gram: bool, matmul_dtype=None) -> DictionaryOperator:
    """The operator of `D` (masked atoms zeroed), stored in `matmul_dtype` when one is given."""
    if atom_mask is not None:
        D = jnp.where(atom_mask[:, None], D, 0.0)
    work = D.dtype
    if matmul_dtype is not None:
        D = D.astype(matmul_dtype)
        norm_sq = jnp.sum(jnp.square(D.astype(work)), axis=-1)
        lost = ~jnp.all(jnp.isfinite(norm_sq))
        lost = lost | jnp.any((norm_sq == 0) if atom_mask is None else (norm_sq == 0) & atom_mask)
        D = eqx.error_if(
            D,
            lost,
            f"D does not fit in matmul_dtype={jnp.dtype(matmul_dtype).name}: an entry "
            "overflows or an unmasked atom rounds to zero (rescale D or use bfloat16)",
        )
    k, d = D.shape
    small = gram(D, work) if k <= d else gram(D.T, work)  # same top eigenvalue, smaller matrix
    lipschitz = jnp.maximum(jnp.linalg.eigvalsh(small)[-1], jnp.finfo(work).tiny)
    return DictionaryOperator(
        D=D,
        gram=gram(D, work) if use_gram else None,
        atom_mask=atom_mask,
        lipschitz=lipschitz,
        norms=atom_norm_bounds(D, work),
    )


def _unchanged(old, new):
    """Whether a solver state is bitwise unchanged (a deterministic step is at a fixed point)."""
    leaves = zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new), strict=False)
    return jnp.all(jnp.stack([jnp.array_equal(a, b) for a, b in leaves]))


def _block(solver, op, sig, state, tol):
    """`solver.check_every` steps of one signal, then its certificate check.

    Returns the new state, whether it is certified, whether it is bitwise unchanged (a
    deterministic step is then at a fixed point) and whether it needs a later stage.
    """
    new = jax.lax.fori_loop(0, solver.check_every, lambda _, s: solver.step(op, sig, s), state)
    # Done when the rigorous certificate meets tol, or when the gap is down to the bound on its
    # own rounding: more steps could not certify a smaller one in plain arithmetic (float32
    # codes are then polished and certified in compensated arithmetic, `_final_certificate`).
    bound, _ = op.certified_certificate(sig, solver.codes(new))
    done = (bound.certificate.relative_gap <= tol) | (bound.nominal <= bound.rounding)
    return new, done, _unchanged(state, new), solver.overflow(op, new)


def batch_sizes(n: int) -> list[int]:
    """The static batches the live signals are compacted into: n/8 (at least 64), and 16 for the
    last stragglers (at most n)."""
    large = min(n, max(64, n // 8))
    return [large, 16] if large > 16 else [large]


def _rows(tree, rows):
    return jax.tree_util.tree_map(lambda x: x[rows], tree)


def _run_stage(solver, op, sigs, carry, tol, max_steps, sizes):
    """Step the live signals of one stage until each is certified, stalled, parked or out of steps.

    Work follows the work left: each round gathers live signals into the smallest static batch of
    `sizes` that holds them (the largest when none does), runs one block of steps on it and
    scatters it back, so a finished signal stops costing and the total cost follows the sum over
    signals of their steps, not n times the slowest.
    """
    n = carry[1].shape[0]
    block = jax.vmap(_block, in_axes=(None, None, 0, 0, None))

    def live(c):
        _, steps, done, stalled, parked = c
        return ~done & ~stalled & ~parked & (steps < max_steps)

    def cond(c):
        return jnp.any(live(c))

    def round_of(size):
        def run(c):
            states, steps, done, stalled, parked = c
            idx = jnp.nonzero(live(c), size=size, fill_value=n)[0]  # fill slots are dropped
            rows = jnp.minimum(idx, n - 1)
            new, ok, same, over = block(solver, op, _rows(sigs, rows), _rows(states, rows), tol)
            states = jax.tree_util.tree_map(lambda a, b: a.at[idx].set(b, mode="drop"), states, new)
            steps = steps.at[idx].add(solver.check_every, mode="drop")
            done = done.at[idx].set(ok, mode="drop")
            stalled = stalled.at[idx].set(same, mode="drop")
            parked = parked.at[idx].set(over, mode="drop")
            return states, steps, done, stalled, parked

        return run

    def body(c):
        if len(sizes) == 1:
            return round_of(sizes[0])(c)
        count = jnp.sum(live(c))
        fits = jnp.sum(count <= jnp.asarray(sizes[1:]))  # sizes fall: how many hold them
        return jax.lax.switch(fits, [round_of(s) for s in sizes], c)

    return jax.lax.while_loop(cond, body, carry)


def _solve_chunk(solver, op, sigs, init, tol, max_steps, steps=None):
    """Every signal of one chunk through the solver's stages (`solver.stages`), compacted as it
    finishes, from `steps` steps already taken (default 0) up to `max_steps`. Returns the codes,
    the steps and whether each signal stopped early (certified or at the solver's fixed point)."""
    n = init.shape[0]
    states = jax.vmap(solver.init, in_axes=(None, 0, 0))(op, sigs, init)
    false = jnp.zeros(n, bool)
    steps = jnp.zeros(n, jnp.int32) if steps is None else steps
    carry = (states, steps, false, false, false)
    sizes = batch_sizes(n)
    for stage in solver.stages(op):
        states, steps, done, stalled, _ = carry
        # At least one block of steps, so a warm start is always polished (an exact solver
        # re-solves its support), then until the certificate is met. A signal whose state stops
        # changing has reached the solver's fixed point: more steps cannot lower its gap (in
        # float32 a tol below the rounding floor of the certificate ends there, not at max_steps).
        parked = jax.vmap(stage.overflow, in_axes=(None, 0))(op, states)
        carry = _run_stage(
            stage, op, sigs, (states, steps, done, stalled, parked), tol, max_steps, sizes
        )
    states, steps, done, stalled, _ = carry
    return jax.vmap(solver.codes)(states), steps, stalled | done


def chunk_size(n: int, k: int) -> int:
    """Signals solved together: on a CPU, chunks whose (chunk, k) working arrays stay in a core's
    cache (2^16 code entries: 256 signals at k = 256, within 64 to 512); on accelerators every
    signal at once. Measured on P1/P3 (2-core CPU, n = 4096, k = 256): chunks of 256 took 0.4x
    (P3) to 0.6x (P1) the time of one batch of 4096, chunks of 64 or 128 were slower than 256."""
    if jax.default_backend() != "cpu":
        return n
    per_chunk = 2**16 >> max(k - 1, 1).bit_length()  # 2^16 / k, k rounded up to a power of 2
    return min(n, max(64, min(512, per_chunk)))


# Steps of a signal's first visit on a CPU; signals that need more finish in later visits.
FIRST_PASS_STEPS = 8


def _solve_in_chunks(solver, op, sigs, init, tol, max_steps, size):
    """Every signal through `_solve_chunk`, `size` signals at a time, in one loop (one compiled
    chunk program): first every signal once, in order, for at most `FIRST_PASS_STEPS` steps
    (when chunks are smaller than the batch), then the signals left unfinished (not stopped
    early, steps to spare) gathered from every chunk and resumed from their codes, so their last
    steps run together instead of holding up every chunk. Fill slots hold zero signals,
    certified at once."""
    n = init.shape[0]
    first = jnp.minimum(max_steps, FIRST_PASS_STEPS) if size < n else max_steps
    false = jnp.zeros(n, bool)

    def pending(c):
        _, steps, early, visited = c
        return ~visited, ~early & (steps < max_steps)

    def cond(c):
        new, left = pending(c)
        return jnp.any(new | left)

    def body(c):
        codes, steps, early, visited = c
        new, left = pending(c)
        pick = jnp.where(jnp.any(new), new, left)
        idx = jnp.nonzero(pick, size=size, fill_value=n)[0]  # fill slots are dropped
        rows = jnp.minimum(idx, n - 1)
        valid = idx < n
        sub = jax.tree_util.tree_map(
            lambda a: jnp.where(valid.reshape((-1,) + (1,) * (a.ndim - 1)), a[rows], 0), sigs
        )._replace(lam=jnp.where(valid, sigs.lam[rows], 1))
        fresh = ~visited[rows]
        limit = jnp.where(fresh, first, max_steps)
        start = jnp.where(valid, steps[rows], 0)
        init = jnp.where(valid[:, None], codes[rows], 0)
        out = _solve_chunk(solver, op, sub, init, tol, limit, start)
        codes, steps, early = (
            a.at[idx].set(b, mode="drop") for a, b in zip(c[:3], out, strict=True)
        )
        return codes, steps, early, visited.at[idx].set(True, mode="drop")

    carry = (init, jnp.zeros(n, jnp.int32), false, false)
    codes, steps, early, _ = jax.lax.while_loop(cond, body, carry)
    return codes, steps, early


def _final_certificate(op, sigs, codes, polished=True):
    """The reported certificate, independent of the solver's: from the explicit residual, with
    its rounding bounded. In float32, the codes are first polished (one Newton step on the
    support, kept where it lowers the certified gap) and both certificates are computed with the
    support in compensated arithmetic (`_compensated_certificate.py`), in cache-sized batches
    of signals. `polished=False` (callers that use the codes only, such as a learner's inner
    solves) keeps the plain certificate. Returns `(codes, bound, g)`."""
    if sigs.x.dtype != jnp.float32 or not polished:
        bound, g = jax.vmap(op.certified_certificate)(sigs, codes)
        return codes, bound, g
    n, d = sigs.x.shape
    size = compensated_size(codes.shape[1], d)
    # batches whose gathered atoms (batch x size x d numbers) stay in a core's cache: measured
    # (n = 1000, d = 64, k = 256) 2^18 numbers took half the time of 2^22
    batch = max(1, min(n, 2**18 // (d * size)))

    def one(args):
        sig, a = args
        terms = compensated_terms(op, sig, a, size)
        before = compensated_certificate(op, sig, RefinedCodes(a, jnp.zeros_like(a)), terms)
        polished, delta, rows = polish(op, sig, a, before[2], size)
        after = compensated_certificate(op, sig, polished, moved(op, terms, delta, rows))
        better = after[0].certificate.relative_gap <= before[0].certificate.relative_gap
        chosen = jax.tree_util.tree_map(
            lambda u, v: jnp.where(better, v, u), (a, before[:2]), (polished.a, after[:2])
        )
        return chosen[0], chosen[1][0], chosen[1][1]

    # padded to whole batches (zero signals), so one copy of `one` is compiled
    rounds = -(-n // batch)
    pad = rounds * batch - n
    inputs = jax.tree_util.tree_map(
        lambda v: jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)).reshape(
            (rounds, batch) + v.shape[1:]
        ),
        (sigs, codes),
    )
    out = jax.lax.map(jax.vmap(one), inputs)
    return jax.tree_util.tree_map(lambda v: v.reshape((rounds * batch,) + v.shape[2:])[:n], out)


def _solve_all(solver, op, sigs, init, tol, max_steps, polished=True):
    """Every signal through `_solve_in_chunks` (chunks of `chunk_size`), then the final
    certificate of every signal."""
    n, k = init.shape
    size = chunk_size(n, k)
    codes, steps, early = _solve_in_chunks(solver, op, sigs, init, tol, max_steps, size)
    codes, bound, g = _final_certificate(op, sigs, codes, polished)
    cert = bound.certificate
    kkt = kkt_residual(codes, g, sigs.lam, op.atom_mask)
    converged = cert.relative_gap <= tol
    # not converged but stopped short of max_steps: at the precision limit of the certificate
    return codes, cert, kkt, converged, steps, early & ~converged


def _normalise(X, lam, init):
    """Each signal scaled by a power of two, `2^-e` with `max|x| = m 2^e`, `m` in [1/2, 1)
    (exact: only exponents change), with its lam and warm start. The lasso is homogeneous
    (`x, lam -> c x, c lam` gives `a -> c a`), so the codes scale back exactly, and every
    certificate is computed at a scale where neither its squares nor its rounding bounds
    underflow or overflow."""
    _, e = jnp.frexp(jnp.max(jnp.abs(X), axis=-1))
    big = jnp.ldexp(jnp.ones((), X.dtype), jnp.finfo(X.dtype).maxexp - 4)
    # a scaled lam beyond `big` (far above any lam_max of the scaled signal) gives zero codes
    lam = jnp.minimum(jnp.ldexp(lam, -e), big)
    return jnp.ldexp(X, -e[:, None]), lam, jnp.ldexp(init, -e[:, None]), e


def _denormalise(result: CodingResult, e) -> CodingResult:
    """The result at the original scale: codes and KKT residual times `2^e`, gap and primal
    times `4^e` (a gap that lands below the smallest normal number is rounded up to it, so it
    stays an upper bound); relative gaps and flags are unchanged. An objective that overflows is
    an error."""
    dtype = result.gap.dtype
    gap = jnp.ldexp(result.gap, 2 * e)
    tiny = jnp.finfo(dtype).tiny  # subnormals may be flushed to zero: round up to tiny instead
    gap = jnp.where((gap < tiny) & (result.gap > 0), tiny, gap)
    primal = jnp.ldexp(result.primal, 2 * e)
    primal = eqx.error_if(
        primal,
        ~jnp.isfinite(primal) & jnp.isfinite(result.primal),
        "the objective 1/2 ||x - aD||^2 + lam |a|_1 of some signal overflows "
        f"{jnp.dtype(dtype).name} at the scale of X: rescale X and lam (or use float64)",
    )
    return eqx.tree_at(
        lambda r: (r.codes, r.kkt, r.gap, r.primal),
        result,
        (jnp.ldexp(result.codes, e[:, None]), jnp.ldexp(result.kkt, e), gap, primal),
    )


@eqx.filter_jit
def _sparse_code(
    X, D, lam, init, atom_mask, tol, max_steps, solver, matmul_dtype=None, polished=True
):
    X, lam, init, e = _normalise(X, lam, init)
    use_gram = solver.needs_gram or D.shape[0] <= 2 * D.shape[1]
    # Mixed precision: working-dtype products at full precision (no TF32 or one-pass bfloat16 on
    # accelerators), so the certificates are exact for the rounded problem.
    mixed = matmul_dtype is not None
    with jax.default_matmul_precision("highest") if mixed else contextlib.nullcontext():
        op = make_operator(D, atom_mask, use_gram, matmul_dtype)
        sigs = signals(X, op, lam)
        init = jax.vmap(op.project)(init)
        codes, cert, kkt, converged, steps, stalled = _solve_all(
            solver, op, sigs, init, tol, max_steps, polished
        )
    return _denormalise(coding_result(codes, cert, kkt, converged, steps, stalled), e)


def sparse_code(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    lam: float | Float[ArrayLike, " n"],
    *,
    solver: str | AbstractCodingSolver = "active_set",
    tol: float | None = None,
    max_steps: int = 1000,
    init: Float[ArrayLike, "n k"] | None = None,
    atom_mask: ArrayLike | None = None,
    matmul_dtype: DTypeLike | None = None,
    throw: bool = False,
) -> CodingResult:
    r"""Solve the batched nonnegative lasso
    $\min_{a_i \ge 0} \tfrac12\|x_i - a_i D\|^2 + \lambda_i \sum_k a_{ik}$.

    Arguments:
        X: signals as rows, shape (n, d), or one signal of shape (d,).
        D: dictionary, atoms as rows, shape (k, d) (unit norm by convention; any nonzero norm
            works).
        lam: penalty, a scalar or one value per signal (n,); `lam = 0` is nonnegative least squares.
        solver: `"active_set"` (exact, the default), `"fista"` (accelerated projected gradient),
            `"cd"` (Gram coordinate descent), or a solver instance such as
            `ActiveSet(min_support=64)`. How the default is chosen: `"active_set"` on every
            device and shape, because it was the fastest of the three to a relative gap of 1e-6
            on every problem measured (CPU, `benchmarks/results/coding_*.md`): 50 FISTA steps
            (dense products; none when k > 8d, where screening by the correlations is cheaper),
            then exact support solves in buffers of 32, 64, ... slots, min(k,
            d + 1) at most; on a CPU the signals go through in cache-sized chunks and the few
            that need more than 8 steps are finished together. Accelerators have not been
            measured yet.
        tol: stop a signal once its relative duality gap `gap / primal` is at most `tol`
            (default 1e-10 in float64, 1e-6 in float32). Float32 codes are polished and
            certified in compensated arithmetic at the end (relative gaps down to about 1e-9;
            see the sparse-coding guide).
        max_steps: cap on solver steps per signal.
        init: warm-start codes (n, k), nonnegative.
        atom_mask: boolean (k,); masked atoms get exactly zero codes and are left out of the dual
            constraint (padding for width sweeps).
        matmul_dtype: `None` (default: everything in the dtype of X and D), or a narrower dtype,
            `jnp.bfloat16` or `jnp.float16` (or `jnp.float32` for float64 inputs), in which D is
            stored and every product with it runs, accumulated in the input dtype
            (`preferred_element_type`); codes, solver state and certificates stay in the input
            dtype. The codes then solve, and `gap`/`relative_gap` certify, the lasso for X and the
            **rounded** dictionary `D.astype(matmul_dtype)` (X itself is not rounded), to the
            input dtype's precision. For the original problem, recompute the certificate with
            `duality_gap(X, D, result.codes, lam)` (in float64 for a rounding-free check); the
            rounding adds at most about `2 eps * |a|_1 * (||x|| + ||r|| + |a|_1)` to the gap
            (`eps` of the matmul dtype; measured values in the mixed-precision guide).
        throw: raise if some signal did not converge (otherwise see `result.converged`).

    Arrays may be numpy, JAX, torch tensors (moved to the host) or nested lists. The solve runs in
    the common dtype of X and D: float16 and bfloat16 inputs are upcast to float32 (the result is
    then float32), integer inputs become the default float (float64 with `jax_enable_x64`, else
    float32); complex, string and object inputs raise a `TypeError` naming the argument.

    Returns:
        A [`CodingResult`][sparsedict.CodingResult] with codes, per-signal gap, relative gap, KKT
        residual, converged flags, steps and a status. Works under `jit`, `vmap` and `grad`.

    Derivatives: `codes` is differentiable in X, D and lam (forward and reverse mode) by implicit
    differentiation of the KKT system on the support (see `sparsedict/_coding/_implicit.py`);
    init, atom_mask and tol carry none, and neither do the certificate fields (use
    [`sparsedict.lasso_value`][] and [`sparsedict.duality_gap`][] for differentiable ones). With
    a `matmul_dtype`, they are the derivatives of the input-dtype problem at the returned codes.
    """
    problem, result = checked_solve(
        X, D, lam, solver, tol, max_steps, init, atom_mask, matmul_dtype, throw
    )
    return unbatch(result) if problem.single else result


class CheckedProblem(NamedTuple):
    """Validated arrays of a coding call: `X` (n, d), `D`, `lam` (n,), `atom_mask`, and whether
    the caller passed one signal (`single`)."""

    X: Array
    D: Array
    lam: Array
    atom_mask: Array | None
    single: bool


def checked_solve(
    X, D, lam, solver, tol, max_steps, init, atom_mask, matmul_dtype, throw
) -> tuple[CheckedProblem, CodingResult]:
    """[`sparse_code`][]'s arguments validated once, and the batched solve (not unbatched)."""
    X2, D, lam, init, atom_mask, tol, single = coding_inputs(X, D, lam, init, atom_mask, tol)
    max_steps = jnp.asarray(check.positive_int(max_steps, "max_steps"), jnp.int32)
    low = check_matmul_dtype(matmul_dtype, X2.dtype)
    result = solve(X2, D, lam, init, atom_mask, tol, max_steps, _solver(solver), low)
    if throw:
        result = result.result.error_if(result, result.result != RESULTS.successful)
    return CheckedProblem(X2, D, lam, atom_mask, single), result


def sparse_code_options(options: dict, caller: str) -> dict:
    """The keyword options of [`sparse_code`][] (`options` over its defaults), for entries
    that forward them; an unknown name raises a `TypeError` naming `caller`."""
    return check.forwarded_options(options, _SPARSE_CODE_DEFAULTS, caller)


_SPARSE_CODE_DEFAULTS = check.keyword_defaults(sparse_code)


def solve(
    X, D, lam, init, atom_mask, tol, max_steps, solver, matmul_dtype=None, polished=True
) -> CodingResult:
    """The coding kernel on validated arrays: the seam between public entries and internal code.

    `X` (n, d), `D` (k, d), `lam` (n,), `init` (n, k) nonnegative, `atom_mask` (k,) or None, `tol`
    and `max_steps` scalar arrays, `solver` an instance, `matmul_dtype` None or a narrower dtype
    (as returned by `check_matmul_dtype`); `polished=False` skips the float32 polish and
    compensated certificate (`_final_certificate`). Nothing is checked here:
    [`sparse_code`][] validates once and calls this; learners, sweeps, certify and the wide
    limit call it on arrays they have validated themselves. The codes carry exact derivatives
    (implicit differentiation).
    """
    # The loop sees no derivatives; the codes get exact ones by implicit differentiation.
    sg = jax.lax.stop_gradient
    result = _sparse_code(
        sg(X),
        sg(D),
        sg(lam),
        sg(init),
        atom_mask,
        sg(tol),
        max_steps,
        solver,
        matmul_dtype,
        polished,
    )
    return eqx.tree_at(lambda r: r.codes, result, implicit_codes(result.codes, X, D, lam))


def coding_inputs(X, D, lam, init, atom_mask, tol):
    """Validated `(X (n, d), D, lam (n,), init (n, k), atom_mask, tol, single)` for the coders.

    A single signal (d,) becomes a batch of one (`single` is then True, see `unbatch`).
    """
    dtype = check.float_dtype(("X", X), ("D", D))
    X = check.signals(X, dtype)
    single = X.ndim == 1
    X2 = X[None] if single else X
    n, d = X2.shape
    D, atom_mask = check.dictionary(D, d, dtype, atom_mask)
    k = D.shape[0]
    lam = check.lam(lam, (n,), dtype) if not single else check.lam(lam, (), dtype)[None]
    if init is None:
        init = jnp.zeros((n, k), dtype)
    else:
        init = check.codes(init, (k,) if single else (n, k), dtype, name="init").reshape(n, k)
    tol = jnp.asarray(default_tol(dtype) if tol is None else tol, dtype)
    tol = eqx.error_if(tol, ~(tol >= 0), "tol must be >= 0")
    return X2, D, lam, init, atom_mask, tol, single


def unbatch(result):
    """Drop the batch axis of a result computed for a single signal."""
    return jax.tree_util.tree_map(lambda a: a[0] if getattr(a, "ndim", 0) > 0 else a, result)


def duality_gap(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    codes: Float[ArrayLike, "n k"],
    lam: float | Float[ArrayLike, " n"],
    *,
    atom_mask: ArrayLike | None = None,
) -> Float[Array, " n"]:
    r"""Per-signal duality gap $P(a) - \mathcal{D}(\theta) \ge 0$ of `codes` (THEORY section 1).

    $\theta = r \min(1, \lambda / \max_k d_k\cdot r)$ with $r = x - aD$. The gap bounds the
    suboptimality: $P(a) - P(a^\star) \le \mathrm{gap}$.
    """
    from .._objective import certificate

    dtype = check.float_dtype(("X", X), ("D", D), ("codes", codes))
    X = check.signals(X, dtype)
    d = X.shape[-1]
    D, atom_mask = check.dictionary(D, d, dtype, atom_mask)
    codes = check.codes(codes, X.shape[:-1] + (D.shape[0],), dtype)
    lam = check.lam(lam, X.shape[:-1], dtype)
    if atom_mask is not None:
        D = jnp.where(atom_mask[:, None], D, 0.0)
    return certificate(X, D, codes, lam, atom_mask).gap
