r"""Optimality residuals: is a dictionary with its codes a stationary point, and can it improve?

[`residuals`][sparsedict.optimality.residuals] measures, for data, a unit-norm dictionary, codes
and $\lambda$, the first-order conditions of THEORY sections 1-2 (gradients from `jax.grad` of
$F$), the free-atom test (section 3) and the second-order block and splitting tests (4.1, 4.2).
[`certify`][sparsedict.optimality.certify] first re-solves the codes to a tight gap (envelope
theorem: the gradient is then that of the dictionary-only objective), for example for an SAE
decoder. [`exchange`][sparsedict.optimality.exchange] is the non-local split/remove test (4.3).
"""

import equinox as eqx
from jaxtyping import Array, ArrayLike, Float

from .. import _objective
from .. import _validation as check
from .._coding._codes import solve_codes
from ._absorption import Absorption as Absorption
from ._absorption import absorption as absorption
from ._absorption import noiseless_codes as noiseless_codes
from ._chunked import ChunkedCertificate as ChunkedCertificate
from ._chunked import MemoryPlan as MemoryPlan
from ._chunked import block_ratio_matrix_free as block_ratio_matrix_free
from ._chunked import certify_chunked as certify_chunked
from ._chunked import plan_certify as plan_certify
from ._chunked import splitting_matrix_free as splitting_matrix_free
from ._exchange import ExchangeReport as ExchangeReport
from ._exchange import exchange as exchange
from ._local_test import LocalTest as LocalTest
from ._local_test import local_test as local_test
from ._report import AtomResiduals as AtomResiduals
from ._report import FreeAtom as FreeAtom
from ._report import OptimalityReport as OptimalityReport
from ._report import SignalResiduals as SignalResiduals
from ._residuals import report

__all__ = [
    "Absorption",
    "AtomResiduals",
    "ChunkedCertificate",
    "ExchangeReport",
    "FreeAtom",
    "LocalTest",
    "MemoryPlan",
    "OptimalityReport",
    "SignalResiduals",
    "absorption",
    "block_ratio_matrix_free",
    "certify",
    "certify_chunked",
    "exchange",
    "local_test",
    "noiseless_codes",
    "objective",
    "plan_certify",
    "residuals",
    "splitting_matrix_free",
]


def objective(X, D, codes, lam, *, weights=None) -> Float[Array, ""]:
    r"""$F(D, A) = \frac1W\sum_i w_i[\frac12\|x_i - a_i D\|^2 + \lambda \sum_k a_{ik}]$, the
    objective whose stationarity [`residuals`][sparsedict.optimality.residuals] measures.

    Arguments as in `residuals`: X (n, d), D (k, d) (any atom norms), codes (n, k), scalar
    `lam >= 0`, optional weights (n,). Differentiable in X, D, codes and lam.
    Inputs as in `sparsedict.sparse_code` (numpy, JAX, torch, lists; float16/bfloat16 computed
    in float32).
    """
    dtype = check.float_dtype(("X", X), ("D", D), ("codes", codes))
    X = check.signals(X, dtype)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got shape {X.shape}")
    D, _ = check.dictionary(D, X.shape[1], dtype)
    codes = check.codes(codes, (X.shape[0], D.shape[0]), dtype)
    lam = check.lam(lam, (), dtype)
    weights = check.weights(weights, X.shape[0], dtype)
    return _objective.mean_objective(X, D, codes, lam, weights)


def residuals(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    codes: Float[ArrayLike, "n k"],
    lam: float | Float[ArrayLike, ""],
    *,
    weights: Float[ArrayLike, " n"] | None = None,
    atom_mask: ArrayLike | None = None,
    second_order: bool = True,
) -> OptimalityReport:
    r"""Optimality residuals of $(D, A)$ for $F(D, A) = \frac1W\sum_i w_i[\frac12\|x_i - a_i D\|^2
    + \lambda \sum_k a_{ik}]$ on unit-norm atoms.

    Arguments:
        X: signals (n, d). D: unit-norm atoms as rows (k, d). codes: (n, k), nonnegative.
        lam: scalar penalty, > 0. weights: optional per-signal weights (n,), default 1.
        atom_mask: optional boolean (k,); masked atoms are ignored (zeros, flagged `masked`).
        second_order: also run the block and splitting tests (THEORY 4.1, 4.2; about
            k n d^2 work). With False, `block_ratio`, `split_strength`, `split_direction` are None:
            the cheap first-order report the learners stop on.

    Returns:
        An [`OptimalityReport`][sparsedict.optimality.OptimalityReport]. All zero residuals
        (KKT, gap, constraint) with `free_atom.ratio <= 1` certify a global optimum at every width.
        Normalisation: `relative_constraint` is divided by `lam`; gradients are in units of $F$.
        Works under `jit`; raises if codes are negative, shapes mismatch or atoms are not unit norm.

    Arrays may be numpy, JAX, torch tensors or lists; float16/bfloat16 inputs are computed (and
    reported) in float32, integer inputs in the default float.
    """
    arrays = dict(X=X, D=D, codes=codes, lam=lam, weights=weights, atom_mask=atom_mask)
    arrays = {name: check.optional_array(a, name) for name, a in arrays.items()}
    return _checked_residuals(**arrays, second_order=second_order)


@eqx.filter_jit
def _checked_residuals(X, D, codes, lam, weights, atom_mask, second_order):
    # validation inside the compiled function: value checks are `eqx.error_if` in the data flow
    X, D, codes, mask = check.signals_dictionary_codes(X, D, codes, atom_mask)
    lam = check.positive_lam(lam, X.dtype)
    weights = check.weights(weights, X.shape[0], X.dtype)
    return report(X, D, codes, lam, weights, mask, second_order)


def certify(
    X: Float[ArrayLike, "n d"],
    D: Float[ArrayLike, "k d"],
    lam: float | Float[ArrayLike, ""],
    *,
    weights: Float[ArrayLike, " n"] | None = None,
    atom_mask: ArrayLike | None = None,
    solver: str = "active_set",
    tol: float | None = None,
    max_steps: int = 1000,
) -> OptimalityReport:
    """Re-solve the codes of `D` (the kernel of [`sparsedict.sparse_code`][]) to a tight gap,
    then report [`residuals`][sparsedict.optimality.residuals] (the per-signal gaps bound the
    code error)."""
    X, D, _, mask = check.signals_dictionary_codes(X, D, None, atom_mask)
    lam = check.positive_lam(lam, X.dtype)
    weights = check.weights(weights, X.shape[0], X.dtype)
    tol = check.tol(tol, X.dtype)
    max_steps = check.positive_int(max_steps, "max_steps")
    codes = solve_codes(
        X, D, lam, atom_mask=mask, tol=tol, max_steps=max_steps, solver=solver
    ).codes
    return report(X, D, codes, lam, weights, mask)
