r"""Online (minibatch) dictionary learning (Mairal, Bach, Ponce and Sapiro, 2009/2010).

For minibatch $X_t$ (b signals) with exact codes $A_t$ the sufficient statistics are updated with
forgetting

$$S^{AA}_t = \beta_t S^{AA}_{t-1} + \tfrac1b A_t^\top A_t, \qquad
  S^{AX}_t = \beta_t S^{AX}_{t-1} + \tfrac1b A_t^\top X_t, \qquad
  \beta_t = (1 - 1/\tau_t)^\rho, \quad \tau_t = \min(t, m / b),$$

then `atom_sweeps` passes of block-coordinate descent on the unit sphere minimise the surrogate
$\tfrac12\mathrm{tr}(D^\top S^{AA} D) - \mathrm{tr}(D^\top S^{AX})$.

The age $\tau_t$ is capped at `memory` $m$ (in signals; `learn_dictionary` uses half the number
of training signals): once the data are revisited, the statistics decay geometrically and the
codes of past epochs, computed with an older dictionary, fade out, as in SPAMS' `trainDL` (which
bounds its window by two epochs). Without the cap the window grows like $t/(\rho + 1)$ steps, so
on a data set seen many times the surrogate lags many epochs behind the dictionary: on the
planted problems of `tests/test_online_recovery.py` learning stalled at 1.34 to 1.57 times the
optimum with 0 to 5 of 12 atoms recovered after 500 steps; with the cap and 4 sweeps it reaches
the alternating optimum in the same steps (`benchmarks/results/online_planted.md`). A cap of one
epoch needed twice the steps on a planted problem with 24 atoms in d = 40.

The minibatch codes are inexact by default: at most `code_steps` = 40 FISTA steps from zero
(stopping earlier where the relative gap reaches `tol`), whatever the `solver` of the certified
codes (stopping test, returned codes, report). The statistics only need codes good enough for the
next atom update (Mairal et al. 2010 use approximate codes too), and the certified solve of a
minibatch cost almost all of a step: on the image patches of `benchmarks/learning.py` (d = 64,
k = 256, b = 256, float32, 2-core CPU) FISTA to the relative gap 1e-4 took 137 steps per signal
on average (atom sweeps, statistics, revival and metrics together under a tenth of a step), while
40 steps made each step about 3.8 times cheaper with a lower held-out objective per step (2.286
against 2.312 after 400 steps; 30 steps: 2.245 against 2.230 for 40 after 800 steps;
`experiments/online_code_budget.py`, issue 16). `code_steps=None` restores certified codes with
`solver` (at most `code_max_steps` steps).

Atoms never used so far are revived on the minibatch's largest residuals (THEORY section 3).
Minibatches are streamed from the host, so the data need not fit on the device.
"""

from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._coding._codes import solve_codes
from ._learner import AtomLearner
from ._metrics import step_info


class OnlineState(NamedTuple):
    D: Float[Array, "k d"]
    AtA: Float[Array, "k k"]
    AtX: Float[Array, "k d"]
    atom_mask: Bool[Array, " k"]  # False on padding (width sweeps)
    step: Int[Array, ""]


def _optional_array(value):
    # An array, not a Python number: a new data size does not recompile the training chunk.
    return None if value is None else jnp.asarray(value, float)


class Online(AtomLearner):
    """Online learning on minibatches (`lam`, `tol`, `memory` are arrays: no recompile)."""

    data: ClassVar[str] = "minibatches"

    forgetting: float = 3.0  # rho in beta_t = (1 - 1/tau_t)^rho; larger forgets faster
    # Cap m on the age tau_t, in signals (None: no cap, for a stream seen once).
    memory: Float[Array, ""] | None = eqx.field(default=None, converter=_optional_array)
    # Sweeps over the atoms per minibatch: the statistics change little from one step to the
    # next, so several sweeps per step cost little next to the codes and track the surrogate's
    # minimiser (1 sweep left 1 to 4 of 12 planted atoms unrecovered on some seeds).
    atom_sweeps: int = 4
    # FISTA steps per minibatch code solve (None: certified codes with `solver`; module doc).
    code_steps: int | None = 40

    def __check_init__(self):
        if self.code_steps is not None and (
            isinstance(self.code_steps, bool)
            or not isinstance(self.code_steps, int)
            or self.code_steps < 1
        ):
            raise ValueError(
                "code_steps (FISTA steps per minibatch code solve) must be an int >= 1 or None, "
                f"got {self.code_steps!r}"
            )

    def solve_codes(self, X, D, lam, tol, mask, init=None):
        """The minibatch's codes: at most `code_steps` FISTA steps from `init` (zeros), stopping
        where the relative gap reaches `tol`; with `code_steps=None`, certified codes."""
        if self.code_steps is None:
            return super().solve_codes(X, D, lam, tol, mask, init)
        return solve_codes(
            X,
            D,
            lam,
            solver="fista",
            tol=tol,
            max_steps=self.code_steps,
            init=init,
            atom_mask=mask,
            polished=False,
        )

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

    def forget(self, step, batch_size, dtype):
        r"""The forgetting factor $\beta_t = (1 - 1/\tau_t)^\rho$, $\tau_t = \min(t, m/b)$, at
        step $t$ = `step` (counted from 1) with minibatches of `batch_size` signals."""
        age = step.astype(dtype)
        if self.memory is not None:
            age = jnp.minimum(age, jnp.maximum(self.memory.astype(dtype) / batch_size, 1.0))
        return (1.0 - 1.0 / age) ** self.forgetting

    def step(self, batch, lam, tol, state):
        mask = state.atom_mask
        A = self.exact_codes(batch, state.D, lam, tol, mask)  # inexact by default: code_steps
        b = batch.shape[0]
        beta = self.forget(state.step + 1, b, batch.dtype)
        AtA = beta * state.AtA + A.T @ A / b
        AtX = beta * state.AtX + A.T @ batch / b
        D = self.update_dictionary(state.D, batch, A, AtA, AtX, jnp.diagonal(AtA), lam, mask)
        new = OnlineState(D=D, AtA=AtA, AtX=AtX, atom_mask=mask, step=state.step + 1)
        return new, step_info(batch, D, A, lam, mask)
