r"""The exchange test at fixed width (THEORY 4.3): split one atom, remove another.

`SplitGain(k)`: decrease of $F$ when atom $k$ is split into $d_k \pm \epsilon u_k$ ($u_k$ the
splitting direction of THEORY 4.2) and the pair is re-optimised by a few alternating steps.
`RemovalCost(j)`: increase of $F$ when atom $j$ is deleted and the codes re-solved. A global
minimiser needs $\max_k \mathrm{SplitGain}(k) \le \min_j \mathrm{RemovalCost}(j)$; a violation
points at a better dictionary of the same width, which is built and reported. A host-level
diagnostic (one code solve per atom), not for `jit`.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import _validation as check
from .._coding._codes import solve_codes
from ._refine import jit_objective as _objective
from ._refine import refine
from ._second_order import second_order


@eqx.filter_jit
def _split_directions(X, D, codes, lam, weights):
    scale = jnp.max(jnp.linalg.norm(X, axis=-1))
    return second_order(D, codes, X - codes @ D, lam, weights, scale)[2]


class ExchangeReport(eqx.Module):
    """Split gains and removal costs per atom (k,), and the best swap found.

    `violated` is the test's verdict (max gain > min cost over distinct atoms); `swap_dictionary`
    (same width, unit atoms) has objective `swap_objective`, below `objective` when the swap helps.
    """

    objective: Float[Array, ""]
    split_gain: Float[Array, " k"]
    removal_cost: Float[Array, " k"]
    violated: bool
    split_atom: int
    removed_atom: int
    swap_dictionary: Float[Array, "k d"]
    swap_objective: Float[Array, ""]


def exchange(X, D, lam, *, weights=None, atom_mask=None, split_eps=0.1, refine_steps=20):
    """Run the split/remove exchange test on dictionary `D` (codes are solved exactly)."""
    X, D, _, mask = check.signals_dictionary_codes(X, D, None, atom_mask)
    lam = check.positive_lam(lam, X.dtype)
    weights = check.weights(weights, X.shape[0], X.dtype)
    k = D.shape[0]
    active = np.ones(k, bool) if mask is None else np.asarray(mask)
    if active.sum() < 2:
        raise ValueError("exchange needs at least two unmasked atoms in D")
    # everything runs at width k + 1 (a padding slot for the split copy): one compilation
    D_wide = jnp.concatenate([D, jnp.zeros((1, D.shape[1]), D.dtype)])
    base_mask = jnp.asarray(np.append(active, False))
    codes = solve_codes(X, D_wide, lam, atom_mask=base_mask).codes
    F0 = _objective(X, D_wide, codes, lam, weights)
    directions = _split_directions(X, D_wide, codes, lam, weights)

    wide_mask = base_mask.at[k].set(True)
    gains, split_dicts = np.full(k, -np.inf), {}
    for kk in np.flatnonzero(active):
        plus = D[kk] + split_eps * directions[kk]
        minus = D[kk] - split_eps * directions[kk]
        D_split = D_wide.at[kk].set(plus / jnp.linalg.norm(plus))
        D_split = D_split.at[k].set(minus / jnp.linalg.norm(minus))
        D_split, _, F_split = refine(X, D_split, lam, weights, wide_mask, refine_steps)
        gains[kk] = float(F0 - F_split)
        split_dicts[kk] = D_split

    costs = np.full(k, np.inf)
    for j in np.flatnonzero(active):
        removed = base_mask.at[j].set(False)
        codes_j = solve_codes(X, D_wide, lam, atom_mask=removed).codes
        D_j = jnp.where(removed[:, None], D_wide, 0.0)
        costs[j] = float(_objective(X, D_j, codes_j, lam, weights) - F0)

    margin = gains[:, None] - costs[None, :]
    np.fill_diagonal(margin, -np.inf)
    split_atom, removed_atom = np.unravel_index(np.argmax(margin), margin.shape)
    swap_mask = wide_mask.at[removed_atom].set(False)
    D_swap, _, F_swap = refine(X, split_dicts[split_atom], lam, weights, swap_mask, refine_steps)
    keep = np.flatnonzero(np.asarray(swap_mask))
    return ExchangeReport(
        objective=F0,
        split_gain=jnp.asarray(gains),
        removal_cost=jnp.asarray(costs),
        violated=bool(margin.max() > 0),
        split_atom=int(split_atom),
        removed_atom=int(removed_atom),
        swap_dictionary=D_swap[keep],
        swap_objective=F_swap,
    )
