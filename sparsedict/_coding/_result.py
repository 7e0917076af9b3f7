"""The result of [`sparsedict.sparse_code`][]: codes with their per-signal certificates."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int


class RESULTS(eqx.Enumeration):
    successful = ""
    max_steps_reached = (
        "sparse_code reached max_steps before every signal's relative gap fell below tol; "
        "raise max_steps, loosen tol, or inspect result.converged"
    )
    precision_limit = (
        "sparse_code stopped some signals with relative gaps above tol: for them, tol is below "
        "what the dtype of X and D can certify (the gap is down to the bound on its own rounding, "
        "or the solver reached a fixed point); loosen tol (inspect result.relative_gap), or, for "
        "float32 or narrower inputs, solve in float64"
    )
    nonfinite = "sparse_code produced non-finite codes"


class CodingResult(eqx.Module):
    """Codes and their certificates.

    Attributes (n signals, k atoms; a single signal drops the n axis):
        codes: (n, k) nonnegative codes, exactly zero on masked atoms.
        gap: (n,) duality gap `primal - dual >= 0`; `primal - optimum <= gap`. An upper bound
            on the exact gap of `codes` (rounding of its own computation included).
        relative_gap: (n,) `gap / max(primal, tiny)`, the quantity compared with `tol`; an upper
            bound on the exact relative gap.
        primal: (n,) objective `1/2 ||x - a D||^2 + lam sum(a)`.
        kkt: (n,) KKT residual `||a - max(0, a + D r - lam)||`.
        converged: (n,) whether `relative_gap <= tol`.
        steps: (n,) solver steps taken for each signal.
        result: `RESULTS.successful` when every signal converged.
    """

    codes: Float[Array, "*n k"]
    gap: Float[Array, "*n"]
    relative_gap: Float[Array, "*n"]
    primal: Float[Array, "*n"]
    kkt: Float[Array, "*n"]
    converged: Bool[Array, "*n"]
    steps: Int[Array, "*n"]
    result: RESULTS

    def summary(self) -> str:
        """A short human-readable table of the certificates (host-side; not for jit)."""
        conv = np.atleast_1d(np.asarray(self.converged))
        rel = np.atleast_1d(np.asarray(self.relative_gap))
        kkt = np.atleast_1d(np.asarray(self.kkt))
        steps = np.atleast_1d(np.asarray(self.steps))
        l0 = np.atleast_2d(np.asarray(self.codes) > 0).sum(-1)
        rows = [
            ("signals", f"{conv.size}"),
            ("converged", f"{conv.sum()} ({100 * conv.mean():.1f}%)"),
            ("relative gap  median / max", f"{np.median(rel):.2e} / {rel.max():.2e}"),
            ("KKT residual  median / max", f"{np.median(kkt):.2e} / {kkt.max():.2e}"),
            ("active atoms  mean / max", f"{l0.mean():.1f} / {l0.max()}"),
            ("steps  median / max", f"{int(np.median(steps))} / {steps.max()}"),
            ("status", RESULTS[self.result] or "successful"),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def status(converged, stalled, codes) -> RESULTS:
    """successful if every signal converged; else max_steps_reached if some signal was still
    moving, else precision_limit (every unconverged signal stopped at the precision limit of its
    certificate: `stalled`)."""
    finite = jnp.all(jnp.isfinite(codes))
    unfinished = RESULTS.where(
        jnp.any(~converged & ~stalled), RESULTS.max_steps_reached, RESULTS.precision_limit
    )
    return RESULTS.where(
        ~finite,
        RESULTS.nonfinite,
        RESULTS.where(jnp.all(converged), RESULTS.successful, unfinished),
    )


def coding_result(codes, cert, kkt, converged, steps, stalled) -> CodingResult:
    """A `CodingResult` from the final codes, their certificate and the loop's counters."""
    return CodingResult(
        codes=codes,
        gap=cert.gap,
        relative_gap=cert.relative_gap,
        primal=cert.primal,
        kkt=kkt,
        converged=converged,
        steps=steps,
        result=status(converged, stalled, codes),
    )
