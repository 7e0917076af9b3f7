r"""The free-atom test (THEORY section 3).

A new atom $u = r_j / \|r_j\|$ with a small code $t$ on signal $j$ changes $F$ by
$\tfrac{w_j}{W} t (\lambda - \|r_j\|)$ to first order, so a free atom lowers $F$ iff
$\max_i \|r_i\| > \lambda$. The slope is `jax.grad` of $F$ in $t$ at $t = 0$ with the atom appended.
If the codes are optimal and $\max_i \|r_i\| \le \lambda$, the point attains the wide-limit bound:
it is a global optimum at every width.
"""

import jax
import jax.numpy as jnp

from .._objective import mean_objective, residual
from ._report import FreeAtom


def free_atom(X, D, codes, lam, weights) -> FreeAtom:
    r = residual(X, D, codes)
    norms = jnp.linalg.norm(r, axis=-1)
    ratio = jnp.where(weights > 0, norms / lam, 0.0)
    j = jnp.argmax(ratio)
    nonzero = norms[j] > 0
    direction = r[j] / jnp.where(nonzero, norms[j], 1.0)

    def with_new_atom(t):
        D_new = jnp.concatenate([D, direction[None]])
        new_codes = jnp.zeros((X.shape[0], 1), codes.dtype).at[j, 0].set(t)
        return mean_objective(X, D_new, jnp.concatenate([codes, new_codes], 1), lam, weights)

    slope = jax.grad(with_new_atom)(jnp.zeros((), codes.dtype))
    return FreeAtom(ratio=ratio[j], signal=j, direction=direction, slope=slope)
