r"""The wide limit of dictionary learning (THEORY sections 5 and 6).

- [`bound`][sparsedict.wide_limit.bound]: the mean Huber function of the signal norms, a lower
  bound on $F(D, A)$ for every dictionary of every width;
- [`solution`][sparsedict.wide_limit.solution]: the atom-per-datapoint optimum attaining it;
- [`gap_to_bound`][sparsedict.wide_limit.gap_to_bound]: how far a finite dictionary is above it;
- [`solve_candidate_problem`][sparsedict.wide_limit.solve_candidate_problem]: a fixed candidate
  dictionary with a group usage penalty, solved with a duality-gap certificate;
- [`solve_relu_sae`][sparsedict.wide_limit.solve_relu_sae]: the convex infinite-width ReLU SAE
  over fixed encoder candidates, with a certificate.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .. import _validation as check
from .._coding._codes import solve_codes
from .._objective import mean_objective
from . import _candidate, _relu_sae
from ._candidate import CandidateSolution as CandidateSolution
from ._closed_form import WideLimitSolution as WideLimitSolution
from ._closed_form import closed_form, huber_bound
from ._closed_form import huber as huber
from ._fista import RESULTS as RESULTS
from ._relu_sae import ReluSAESolution as ReluSAESolution

__all__ = [
    "RESULTS",
    "CandidateSolution",
    "ReluSAESolution",
    "WideLimitSolution",
    "bound",
    "gap_to_bound",
    "huber",
    "solution",
    "solve_candidate_problem",
    "solve_relu_sae",
]


def _signals(X, lam, weights):
    X = check.matrix_signals(X, check.float_dtype(("X", X)))
    return X, check.positive_lam(lam, X.dtype), check.weights(weights, X.shape[0], X.dtype)


def _host(X, lam, weights):
    """The arguments of a compiled entry as arrays (torch tensors and lists converted)."""
    return (
        check.as_array(X, "X"),
        check.as_array(lam, "lam"),
        check.optional_array(weights, "weights"),
    )


def bound(
    X: Float[ArrayLike, "n d"], lam, *, weights: Float[ArrayLike, " n"] | None = None
) -> Float[jnp.ndarray, ""]:
    r"""$\frac1W \sum_i w_i H_\lambda(\|x_i\|)$: no dictionary of any width has lower $F$."""
    return _checked_bound(*_host(X, lam, weights))


@eqx.filter_jit
def _checked_bound(X, lam, weights):
    return huber_bound(*_signals(X, lam, weights))


def solution(X: Float[ArrayLike, "n d"], lam, *, weights=None) -> WideLimitSolution:
    """The atom-per-datapoint optimum (padded to n atoms, see `WideLimitSolution.compact`)."""
    return _checked_solution(*_host(X, lam, weights))


@eqx.filter_jit
def _checked_solution(X, lam, weights):
    return closed_form(*_signals(X, lam, weights))


def gap_to_bound(X, D, lam, *, codes=None, weights=None, atom_mask=None):
    """`F(D, A) - bound >= 0`; the codes are re-solved exactly (as by `sparse_code`) when not
    given."""
    X, D, codes, mask = check.signals_dictionary_codes(X, D, codes, atom_mask)
    _, lam, weights = _signals(X, lam, weights)
    if codes is None:
        codes = solve_codes(X, D, lam, atom_mask=mask).codes
    return _gap_to_bound(X, D, codes, lam, weights)


@eqx.filter_jit
def _gap_to_bound(X, D, codes, lam, weights):
    return mean_objective(X, D, codes, lam, weights) - huber_bound(X, lam, weights)


def solve_candidate_problem(
    X: Float[ArrayLike, "n d"],
    candidates: Float[ArrayLike, "m d"],
    lam,
    gam,
    *,
    weights=None,
    init=None,
    tol: float | None = None,
    max_steps: int = 20000,
    throw: bool = False,
) -> CandidateSolution:
    r"""Solve $\min_{A \ge 0} F(C, A) + \gamma \sum_j \|A_{:,j}\|_2$ over fixed unit candidates
    `candidates` (m, d) by FISTA; stops when `gap <= tol * primal` (default 1e-10 in float64) or
    at `max_steps` (then `result` is `RESULTS.max_steps_reached`, an error with `throw=True`)."""
    X, lam, weights = _signals(X, lam, weights)
    _, C, init, _ = check.signals_dictionary_codes(X, candidates, init, None)
    if init is None:
        init = jnp.zeros((X.shape[0], C.shape[0]), X.dtype)
    gam = check.lam(gam, (), X.dtype, "gam")
    tol = check.tol(tol, X.dtype)
    max_steps = jnp.asarray(check.positive_int(max_steps, "max_steps"), jnp.int32)
    return _thrown(_candidate.solve(X, C, lam, gam, weights, init, tol, max_steps), throw)


def solve_relu_sae(
    X: Float[ArrayLike, "n d"],
    lam,
    encoders: Float[ArrayLike, "M d"],
    biases: Float[ArrayLike, " M"] | None = None,
    *,
    weights=None,
    tol: float | None = None,
    max_steps: int = 20000,
    throw: bool = False,
) -> ReluSAESolution:
    r"""The convex infinite-width ReLU SAE with features $\mathrm{relu}(v_m\cdot x + b_m)$ for the
    fixed `encoders` $v_m$ (M, d) and `biases` (M,) (default 0); its value bounds the Huber bound
    from above. Stopping, `result` and `throw` as in `solve_candidate_problem`."""
    X, lam, weights = _signals(X, lam, weights)
    encoders = jnp.asarray(check.as_array(encoders, "encoders"), X.dtype)
    if encoders.ndim != 2 or encoders.shape[1] != X.shape[1]:
        raise ValueError(f"encoders must have shape (M, {X.shape[1]}), got {encoders.shape}")
    M = encoders.shape[0]
    biases = jnp.zeros((M,), X.dtype) if biases is None else check.as_array(biases, "biases")
    biases = jnp.asarray(biases, X.dtype)
    if biases.shape != (M,):
        raise ValueError(f"biases must have shape ({M},), got {biases.shape}")
    tol = check.tol(tol, X.dtype)
    max_steps = jnp.asarray(check.positive_int(max_steps, "max_steps"), jnp.int32)
    return _thrown(_relu_sae.solve(X, encoders, biases, lam, weights, tol, max_steps), throw)


def _thrown(solution, throw):
    """Raise when asked and the solver did not converge (otherwise see `solution.result`)."""
    if not throw:
        return solution
    return solution.result.error_if(solution, solution.result != RESULTS.successful)
