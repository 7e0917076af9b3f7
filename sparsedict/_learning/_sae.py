r"""A vanilla ReLU sparse autoencoder trained with optax.

$$a = \mathrm{relu}(W_{\mathrm{enc}}(x - b_{\mathrm{dec}}) + b_{\mathrm{enc}}), \qquad
  \hat x = a D + b_{\mathrm{dec}},$$
$$\mathcal{L} = \tfrac12\|x - \hat x\|^2 + \lambda \textstyle\sum_k a_k\, \omega_k,$$

with $\omega_k = 1$ and unit-norm decoder rows (`norm="unit"`: the decoder gradient is projected
on each sphere's tangent space and the rows renormalised after each step), or $\omega_k = \|d_k\|$
with a free decoder (`norm="weighted"`, the decoder-norm-weighted L1 of many SAE papers; the
dictionary reported is then the normalised decoder with codes $a_k \|d_k\|$, the same objective).
With $b_{\mathrm{dec}} = 0$ (the default) the SAE optimises THEORY's objective with amortised codes.
With a trained decoder bias (`decoder_bias=True`), $b_{\mathrm{dec}}$ starts at the geometric
median of the initialisation signals, as sparsify and dictionary_learning do (SAELens offers it
as an option), so that a large common offset is not left for the atoms to fit.
"""

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from .._dictionary import riemannian_gradient
from .._objective import primal
from ._learner import AbstractLearner
from ._metrics import step_info

# Weiszfeld iterations of the geometric median (each one costs one pass over the signals).
_MEDIAN_STEPS = 100


def geometric_median(X: Float[Array, "n d"], steps: int = _MEDIAN_STEPS) -> Float[Array, " d"]:
    r"""$\arg\min_b \sum_i \|x_i - b\|$ by Weiszfeld's iteration from the mean:
    $b \leftarrow \sum_i w_i x_i / \sum_i w_i$, $w_i = 1/\max(\|x_i - b\|, \epsilon)$."""
    scale = jnp.max(jnp.abs(X))
    floor = jnp.finfo(X.dtype).eps * jnp.where(scale > 0, scale, 1.0)

    def update(_, b):
        distance = jnp.linalg.norm(X - b[None, :], axis=-1)
        w = 1.0 / jnp.maximum(distance, floor)
        return (w @ X) / jnp.sum(w)

    return jax.lax.fori_loop(0, steps, update, jnp.mean(X, axis=0))


class SAE(eqx.Module):
    """Encoder `(W_enc, b_enc)`, decoder rows `D` (atoms) and decoder bias `b_dec`."""

    W_enc: Float[Array, "k d"]
    b_enc: Float[Array, " k"]
    D: Float[Array, "k d"]
    b_dec: Float[Array, " d"]

    def encode(self, X):
        pre = self.center(X) @ self.W_enc.T
        return jax.nn.relu(pre + jnp.broadcast_to(self.b_enc, pre.shape))

    def decode(self, A):
        R = A @ self.D
        return R + jnp.broadcast_to(self.b_dec, R.shape)

    def center(self, X):
        """`x - b_dec` for every signal."""
        return X - jnp.broadcast_to(self.b_dec, X.shape)

    def dictionary_and_codes(self, X):
        """Unit-norm atoms and the matching codes (`a_k ||d_k||`), for THEORY's objective."""
        norms = jnp.linalg.norm(self.D, axis=-1)
        safe = jnp.where(norms > 0, norms, 1.0)
        A = self.encode(X)
        return self.D / safe[:, None], A * jnp.broadcast_to(norms, A.shape)


class SAEState(NamedTuple):
    sae: SAE
    opt_state: optax.OptState
    step: Int[Array, ""]


class SAETrainer(AbstractLearner):
    """Minibatch SAE training with `optimizer` (see the module doc)."""

    data: ClassVar[str] = "minibatches"
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    norm: str = eqx.field(static=True, default="unit")
    decoder_bias: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.norm not in ("unit", "weighted"):
            raise ValueError(f"norm must be 'unit' or 'weighted', got {self.norm!r}")

    def init(self, X, D, atom_mask=None):
        """Encoder and decoder at the atoms `D`; `b_dec` at the geometric median of `X` when it
        is trained (zero otherwise)."""
        if atom_mask is not None:
            raise ValueError("the SAE learner does not support padded atoms (atom_mask)")
        b_dec = jnp.zeros(D.shape[1], D.dtype)
        if self.decoder_bias:
            b_dec = geometric_median(X).astype(D.dtype)
        sae = SAE(W_enc=D, b_enc=jnp.zeros(D.shape[0], D.dtype), D=D, b_dec=b_dec)
        return SAEState(sae=sae, opt_state=self.optimizer.init(sae), step=jnp.int32(0))

    def loss(self, sae, X, lam):
        """The lasso objective of the encoder's codes for the decoder, on the centred signals
        (`norm="weighted"`: the decoder-norm-weighted L1)."""
        weights = jnp.linalg.norm(sae.D, axis=-1) if self.norm == "weighted" else None
        return jnp.mean(primal(sae.center(X), sae.D, sae.encode(X), lam, weights))

    def step(self, batch, lam, tol, state):
        del tol
        grads = jax.grad(self.loss)(state.sae, batch, lam)
        if self.norm == "unit":
            grads = eqx.tree_at(lambda s: s.D, grads, riemannian_gradient(state.sae.D, grads.D))
        if not self.decoder_bias:
            grads = eqx.tree_at(lambda s: s.b_dec, grads, jnp.zeros_like(grads.b_dec))
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.sae)
        sae = optax.apply_updates(state.sae, updates)
        if self.norm == "unit":
            sae = eqx.tree_at(
                lambda s: s.D, sae, sae.D / jnp.linalg.norm(sae.D, axis=-1, keepdims=True)
            )
        D, A = sae.dictionary_and_codes(batch)
        info = step_info(sae.center(batch), D, A, lam)
        return SAEState(sae=sae, opt_state=opt_state, step=state.step + 1), info
