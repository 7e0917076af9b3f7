r"""The wide limit: the atom-per-datapoint optimum and the Huber bound (THEORY section 5).

For unit atoms $\|aD\| \le \|a\|_1$, so for every dictionary of every width
$$F(D, A) \ge \frac1W \sum_i w_i H_\lambda(\|x_i\|), \qquad
  H_\lambda(t) = \begin{cases} t^2/2 & t \le \lambda \\
  \lambda t - \lambda^2/2 & t > \lambda,\end{cases}$$
with equality when every point with $\|x_i\| > \lambda$ has its own atom $x_i / \|x_i\|$ and code
$\|x_i\| - \lambda$ (residual $\lambda x_i / \|x_i\|$); points with $\|x_i\| \le \lambda$ get no
code, and points sharing a direction share an atom.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

# Two points share an atom when the cosine of their directions is within this many eps of 1.
_SAME_DIRECTION_EPS = 64.0


def huber(t, lam):
    r"""$H_\lambda(t)$, elementwise."""
    return jnp.where(t <= lam, 0.5 * t**2, lam * t - 0.5 * lam**2)


def huber_bound(X, lam, weights):
    norms = jnp.linalg.norm(X, axis=-1)
    return jnp.sum(weights * huber(norms, lam)) / jnp.sum(weights)


class WideLimitSolution(eqx.Module):
    """The atom-per-datapoint optimum, padded to n atoms (one slot per signal).

    Attributes:
        dictionary: (n, d); row j is the atom of signal j when `atom_mask[j]` (signal j is the
            first of its direction with `||x_j|| > lam`), zero otherwise.
        atom_mask: (n,) which rows are atoms.
        codes: (n, n), `codes[i, j] = ||x_i|| - lam` for the atom j of signal i.
        residuals: (n, d) `lam x_i / ||x_i||` (or `x_i` when `||x_i|| <= lam`).
        value: the optimal objective, equal to `bound(X, lam, weights)`.
    """

    dictionary: Float[Array, "n d"]
    atom_mask: Bool[Array, " n"]
    codes: Float[Array, "n n"]
    residuals: Float[Array, "n d"]
    value: Float[Array, ""]

    def compact(self):
        """`(D, codes)` with only the used atoms (host-level, not for `jit`)."""
        keep = np.flatnonzero(np.asarray(self.atom_mask))
        return self.dictionary[keep], self.codes[:, keep]


def closed_form(X, lam, weights) -> WideLimitSolution:
    n = X.shape[0]
    norms = jnp.linalg.norm(X, axis=-1)
    represented = norms > lam
    U = X / jnp.where(norms > 0, norms, 1.0)[:, None]
    eps = jnp.finfo(X.dtype).eps
    same = (U @ U.T >= 1 - _SAME_DIRECTION_EPS * eps) & represented[None, :] & represented[:, None]
    owner = jnp.argmax(same, axis=1)  # first signal with the same direction (itself if none)
    atom_mask = represented & (owner == jnp.arange(n))
    codes = (
        jnp.zeros((n, n), X.dtype)
        .at[jnp.arange(n), owner]
        .set(jnp.where(represented, norms - lam, 0.0))
    )
    return WideLimitSolution(
        dictionary=jnp.where(atom_mask[:, None], U, 0.0),
        atom_mask=atom_mask,
        codes=codes,
        residuals=jnp.where(represented[:, None], lam * U, X),
        value=huber_bound(X, lam, weights),
    )
