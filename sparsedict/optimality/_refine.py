r"""A few steps of alternating minimisation, used by the exchange test to re-optimise a move.

Each step solves the codes exactly (the coding kernel of [`sparsedict.sparse_code`][]), then
updates the atoms one at a time by the block rule of THEORY 2.3,
$d_k \leftarrow \mathrm{normalise}(\sum_i w_i a_{ik} e_{ik})$, $e_{ik} = r_i + a_{ik} d_k$ (an
unused atom stays put).
"""

import equinox as eqx
import jax.numpy as jnp

from .._coding._codes import solve_codes
from .._dictionary import update_atoms
from .._objective import mean_objective


@eqx.filter_jit
def _atom_sweep(X, D, codes, weights, mask):
    weighted = weights[:, None] * codes
    D = update_atoms(D, weighted.T @ codes, weighted.T @ X, mask)
    return jnp.where(mask[:, None], D, 0.0)


jit_objective = eqx.filter_jit(mean_objective)


def refine(X, D, lam, weights, mask, steps):
    """`(D, codes, F)` after `steps` alternating steps (codes re-solved at the end)."""
    codes = jnp.zeros((X.shape[0], D.shape[0]), X.dtype)
    for _ in range(steps):
        codes = solve_codes(X, D, lam, atom_mask=mask, init=codes).codes
        D = _atom_sweep(X, D, codes, weights, mask)
    codes = solve_codes(X, D, lam, atom_mask=mask, init=codes).codes
    return D, codes, jit_objective(X, D, codes, lam, weights)
