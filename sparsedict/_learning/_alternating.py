r"""Alternating minimisation: exact codes, then exact block-coordinate atom updates.

Each step solves the codes of every signal to a certified gap (warm-started from the last step),
optionally revives dead atoms along the free-atom direction (THEORY section 3), and runs exact
block-coordinate descent over the atoms on the unit sphere. Neither half increases
$F(D, A) = \frac1n \sum_i \tfrac12\|x_i - a_i D\|^2 + \lambda\|a_i\|_1$, so the recorded objective
is nonincreasing.
"""

from typing import ClassVar, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._learner import AtomLearner
from ._metrics import step_info


class AlternatingState(NamedTuple):
    D: Float[Array, "k d"]  # masked atoms are zero rows
    codes: Float[Array, "n k"]
    atom_mask: Bool[Array, " k"]  # False on padding (width sweeps)
    step: Int[Array, ""]


class Alternating(AtomLearner):
    """Alternating minimisation on the full data (`lam`, `tol` are arrays: no recompile)."""

    data: ClassVar[str] = "full"

    def init(self, X, D, atom_mask=None):
        mask = jnp.ones(D.shape[0], bool) if atom_mask is None else atom_mask
        D = jnp.where(mask[:, None], D, 0.0)
        codes = jnp.zeros((X.shape[0], D.shape[0]), D.dtype)
        return AlternatingState(D=D, codes=codes, atom_mask=mask, step=jnp.int32(0))

    def step(self, X, lam, tol, state):
        A = self.exact_codes(X, state.D, lam, tol, state.atom_mask, init=state.codes)
        return self.step_from_codes(X, lam, state, A)

    def step_from_codes(self, X, lam, state, A):
        """The rest of `step` once `A`, the exact codes of `X` for `state.D` (warm-started from
        `state.codes`), are known (a sweep's stopping test reuses them)."""
        mask = state.atom_mask
        usage = jnp.sum(A, axis=0)
        D = self.update_dictionary(state.D, X, A, A.T @ A, A.T @ X, usage, lam, mask)
        new = AlternatingState(D=D, codes=A, atom_mask=mask, step=state.step + 1)
        return new, step_info(X, D, A, lam, mask)
