"""The learner contract (`AbstractLearner`) and what the alternating and online learners share:
exact codes, then the atom updates."""

import abc
from typing import Any

import equinox as eqx
import jax

from .._coding._active_set import ActiveSet
from .._coding._codes import solve_codes
from .._coding._result import CodingResult
from .._dictionary import revive_dead_atoms, update_atoms


class AbstractLearner(eqx.Module):
    """One training step at a time; the driver (`_api.py`, the sweeps) owns everything else.

    `data` says what a step reads: `"full"` (every signal, every step) or `"minibatches"` (one
    minibatch per step, streamed by the driver). `init(X, D, atom_mask)` builds the state from
    unit-norm initial atoms `D` (k, d) (what the learner warm-starts: the dictionary; the
    alternating learner also keeps the codes of `X`); `step(X, lam, tol, state)` returns the next
    state and its `StepInfo`. `lam` and `tol` are arrays (changing them never recompiles);
    `atom_mask` marks padding atoms of a sweep bucket (zero rows, never updated).
    """

    data: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def init(self, X, D, atom_mask=None) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def step(self, X, lam, tol, state) -> tuple[Any, Any]:
        raise NotImplementedError


class AtomLearner(AbstractLearner):
    """Exact codes for the current dictionary, then (optionally) dead-atom revival along the
    free-atom direction (THEORY section 3) and exact block-coordinate atom updates on the unit
    sphere from the sufficient statistics $A^\\top A$, $A^\\top X$."""

    solver: str = "active_set"
    code_max_steps: int = 1000
    atom_sweeps: int = 1
    revive: bool = True

    def solve_codes(self, X, D, lam, tol, mask, init=None) -> CodingResult:
        """The code solve of a step (codes and their certificates).

        A warm start `init` is the previous step's exact codes: the active-set method starts
        from its support as it is, without the FISTA warm-up that a row of zero codes (a signal
        no atom explained) would otherwise trigger for its whole chunk of signals. Measured on
        a 2-core CPU, same objectives: alternating steps 1.8x faster (image patches, n = 4096,
        k = 256) and the default `sparsedict sweep`'s training 1.7x faster.
        """
        solver = self.solver
        if init is not None and solver == "active_set":
            solver = ActiveSet(warm_start_steps=0)
        return solve_codes(
            X,
            D,
            lam,
            solver=solver,
            tol=tol,
            max_steps=self.code_max_steps,
            init=init,
            atom_mask=mask,
            polished=False,  # the codes only: no compensated float32 certificate
        )

    def exact_codes(self, X, D, lam, tol, mask, init=None):
        """Codes of `X` (no derivatives flow into the learner's updates)."""
        return jax.lax.stop_gradient(self.solve_codes(X, D, lam, tol, mask, init).codes)

    def update_dictionary(self, D, X, A, AtA, AtX, usage, lam, mask):
        """Revive unused atoms (`usage <= 0`) on `X`'s largest residuals, then update the atoms."""
        if self.revive:
            D, _ = revive_dead_atoms(D, X - A @ D, usage, lam, mask)
        return update_atoms(D, AtA, AtX, mask, sweeps=self.atom_sweeps)
