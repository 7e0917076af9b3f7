r"""What a coding solver sees: one signal's data and the shared dictionary operator.

Solvers are written for one signal and batched with `vmap`; the dictionary (and its Gram matrix
$G = D D^\top$) is shared, never batched.
"""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._objective import Certificate, certificate_from_terms


class Signal(NamedTuple):
    """One signal: `x`, its correlations `c = D x`, `||x||^2`, `||x||` and its `lam`."""

    x: Float[Array, " d"]
    c: Float[Array, " k"]
    x_sq: Float[Array, ""]
    x_norm: Float[Array, ""]
    lam: Float[Array, ""]


class DictionaryOperator(eqx.Module):
    r"""The dictionary with masked atoms zeroed, its Gram matrix when it is cheaper, and the mask.

    Correlations of the residual, $g = D(x - aD) = c - aG$, cost $k^2$ from the Gram matrix and
    $2kd$ from $D$; the Gram form is used when `gram` is present.
    """

    D: Float[Array, "k d"]
    gram: Float[Array, "k k"] | None
    atom_mask: Bool[Array, " k"] | None
    lipschitz: Float[Array, ""]  # lambda_max(D D^T), the gradient's Lipschitz constant

    def correlations_and_residual_sq(self, sig: Signal, a: Float[Array, " k"]):
        r"""$g = D r$ and $\|r\|^2$ for codes `a` ($\|r\|^2 = \|x\|^2 - a\cdot(c + g)$ in Gram form)."""
        if self.gram is not None:
            g = sig.c - a @ self.gram
            return g, sig.x_sq - a @ (sig.c + g)
        r = sig.x - a @ self.D
        return r @ self.D.T, r @ r

    def certificate(self, sig: Signal, a: Float[Array, " k"]) -> tuple[Certificate, Array]:
        g, r_sq = self.correlations_and_residual_sq(sig, a)
        return certificate_from_terms(r_sq, g, a, sig.lam, sig.x_norm, self.atom_mask), g

    def project(self, a: Float[Array, " k"]) -> Float[Array, " k"]:
        """Clip to the nonnegative orthant and zero the masked atoms."""
        a = jnp.maximum(a, 0.0)
        return a if self.atom_mask is None else jnp.where(self.atom_mask, a, 0.0)
