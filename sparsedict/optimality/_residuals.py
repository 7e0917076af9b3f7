"""The optimality kernel on validated arrays: what `residuals` and `certify` report.

Learners, sweeps and `certify` call [`report`][] on arrays they have validated themselves
(inside their own compiled programs, too); the public
[`residuals`][sparsedict.optimality.residuals] validates once and calls it.
"""

import equinox as eqx
import jax.numpy as jnp

from .._objective import mean_objective
from ._first_order import atom_residuals, signal_residuals
from ._free_atom import free_atom
from ._report import OptimalityReport
from ._second_order import second_order


@eqx.filter_jit
def report(X, D, codes, lam, weights, mask, second=True) -> OptimalityReport:
    """The report of `(D, codes)`: X (n, d), unit-norm D (k, d) (masked rows zero), codes (n, k)
    (zero on masked atoms), scalar `lam > 0`, weights (n,), mask (k,) or None; no checks."""
    atoms = atom_residuals(X, D, codes, lam, weights, mask)
    if second:
        R = X - codes @ D
        scale = jnp.max(jnp.linalg.norm(X, axis=-1))
        ratio, strength, direction = second_order(D, codes, R, lam, weights, scale)
        atoms = eqx.tree_at(
            lambda a: (a.block_ratio, a.split_strength, a.split_direction),
            atoms,
            (ratio, strength, direction),
            is_leaf=lambda x: x is None,
        )
    return OptimalityReport(
        objective=mean_objective(X, D, codes, lam, weights),
        lam=lam,
        signals=signal_residuals(X, D, codes, lam, mask),
        atoms=atoms,
        free_atom=free_atom(X, D, codes, lam, weights),
    )
