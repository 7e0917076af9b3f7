"""The interface every coding solver implements: `init` and `step`, for one signal.

The driver ([`sparsedict.sparse_code`][]) owns the loop, the certificate checks, warm starts,
batching and result codes; a solver only steps. A new solver inherits the whole test battery.
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

from .._objective import Certificate
from ._problem import DictionaryOperator, Signal


class AbstractCodingSolver(eqx.Module):
    """A solver of `min_{a >= 0} 1/2 ||x - a D||^2 + lam sum(a)` for one signal."""

    # Steps between two certificate checks (a fixed inner loop: no per-signal branching).
    check_every: eqx.AbstractVar[int]

    @property
    def needs_gram(self) -> bool:
        return False

    def stages(self, op: DictionaryOperator) -> tuple["AbstractCodingSolver", ...]:
        """Variants of this solver run one after the other, cheapest first (default: itself).

        A signal flagged by a stage's `overflow` moves on to the next stage with its state;
        the others stay where they are. The states of all stages must have one structure.
        """
        return (self,)

    def overflow(self, op: DictionaryOperator, state: PyTree) -> Bool[Array, ""]:
        """Whether the state needs a later stage (e.g. a support beyond this stage's buffer)."""
        return jnp.asarray(False)

    @abc.abstractmethod
    def init(self, op: DictionaryOperator, sig: Signal, codes: Float[Array, " k"]) -> PyTree:
        """Solver state from feasible starting codes (zero, or a warm start)."""

    @abc.abstractmethod
    def step(self, op: DictionaryOperator, sig: Signal, state: PyTree) -> PyTree:
        """One iteration."""

    @abc.abstractmethod
    def codes(self, state: PyTree) -> Float[Array, " k"]:
        """The current feasible codes (nonnegative, zero on masked atoms)."""

    def certificate(self, op: DictionaryOperator, sig: Signal, state: PyTree):
        """Certificate of the current codes; solvers override it when they know a cheaper way."""
        cert: Certificate
        cert, g = op.certificate(sig, self.codes(state))
        return cert, g
