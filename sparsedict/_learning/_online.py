r"""Online (minibatch) dictionary learning (Mairal, Bach, Ponce and Sapiro, 2009/2010).

For minibatch $X_t$ with exact codes $A_t$ the sufficient statistics are updated with forgetting
$\beta_t = (1 - 1/t)^\rho$:

$$S^{AA}_t = \beta_t S^{AA}_{t-1} + \tfrac1b A_t^\top A_t, \qquad
  S^{AX}_t = \beta_t S^{AX}_{t-1} + \tfrac1b A_t^\top X_t,$$

then block-coordinate descent on the unit sphere minimises the surrogate
$\tfrac12\mathrm{tr}(D^\top S^{AA} D) - \mathrm{tr}(D^\top S^{AX})$. Atoms never used so far are
revived on the minibatch's largest residuals (THEORY section 3). Minibatches are streamed from the
host, so the data need not fit on the device.
"""

from typing import ClassVar, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._learner import AtomLearner
from ._metrics import step_info


class OnlineState(NamedTuple):
    D: Float[Array, "k d"]
    AtA: Float[Array, "k k"]
    AtX: Float[Array, "k d"]
    atom_mask: Bool[Array, " k"]  # False on padding (width sweeps)
    step: Int[Array, ""]


class Online(AtomLearner):
    """Online learning on minibatches (`lam`, `tol` are arrays: no recompile)."""

    data: ClassVar[str] = "minibatches"

    forgetting: float = 3.0  # rho in beta_t = (1 - 1/t)^rho; larger forgets faster

    def init(self, X, D, atom_mask=None):
        k, d = D.shape
        mask = jnp.ones(k, bool) if atom_mask is None else atom_mask
        return OnlineState(
            D=jnp.where(mask[:, None], D, 0.0),
            AtA=jnp.zeros((k, k), D.dtype),
            AtX=jnp.zeros((k, d), D.dtype),
            atom_mask=mask,
            step=jnp.int32(0),
        )

    def step(self, batch, lam, tol, state):
        mask = state.atom_mask
        A = self.exact_codes(batch, state.D, lam, tol, mask)
        t = (state.step + 1).astype(batch.dtype)
        beta = (1.0 - 1.0 / t) ** self.forgetting
        b = batch.shape[0]
        AtA = beta * state.AtA + A.T @ A / b
        AtX = beta * state.AtX + A.T @ batch / b
        D = self.update_dictionary(state.D, batch, A, AtA, AtX, jnp.diagonal(AtA), lam, mask)
        new = OnlineState(D=D, AtA=AtA, AtX=AtX, atom_mask=mask, step=state.step + 1)
        return new, step_info(batch, D, A, lam, mask)
