"""The optimality report: per-signal and per-atom arrays, and a short table (`str(report)`)."""

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int


class SignalResiduals(eqx.Module):
    r"""Per signal (n,), for the codes $a_i$ the report was made with.

    Attributes:
        kkt: the code KKT residual $\|a_i - \max(0, a_i + D r_i - \lambda)\|$, 0 at the optimum.
        gap: the duality gap of $a_i$ (an upper bound on its suboptimality).
        relative_gap: `gap / primal`, the quantity the code solvers stop on.
        primal: $\tfrac12\|x_i - a_i D\|^2 + \lambda\|a_i\|_1$.
        residual_norm: $\|r_i\| = \|x_i - a_i D\|$.
    """

    kkt: Float[Array, " n"]
    gap: Float[Array, " n"]
    relative_gap: Float[Array, " n"]
    primal: Float[Array, " n"]
    residual_norm: Float[Array, " n"]


class AtomResiduals(eqx.Module):
    r"""Per atom (k,); masked atoms hold zeros and `masked = True`.

    Attributes:
        mass: $m_k = \sum_i w_i a_{ik}$.
        gradient: Euclidean $\nabla_{d_k} F = -\frac1W s_k$ (k, d), from `jax.grad`.
        riemannian_gradient: its tangent part $(I - d_k d_k^\top)\nabla_{d_k} F$ (k, d).
        gradient_norm: $\|$Riemannian gradient$\|$ (in units of $F$ per radian).
        multiplier: $\nu_k = d_k \cdot s_k$; equals $\lambda m_k > 0$ at a stationary point.
        would_shrink: a used atom with $\nu_k < 0$ would lower $F$ by shrinking (norm $\le 1$).
        constraint: $\|s_k / m_k - \lambda d_k\|$ (THEORY 2.2), 0 for unused atoms.
        relative_constraint: `constraint / lam`, comparable across datasets.
        alignment: cosine of $d_k$ and $\sum_i w_i a_{ik} e_{ik}$ (THEORY 2.3), 1 when stationary.
        block_ratio: $\lambda_{\max}(P_k C_k P_k) / \mu_k$ (THEORY 4.1); > 1: saddle, will split.
        split_strength: $S_k$ (THEORY 4.2); splitting changes $F$ at rate $-S_k / W$.
        split_direction: the tangent direction $u$ achieving $S_k$ (k, d).
        dead: unmasked atom with $m_k = 0$.
        masked: atom excluded by `atom_mask`.
    """

    mass: Float[Array, " k"]
    gradient: Float[Array, "k d"]
    riemannian_gradient: Float[Array, "k d"]
    gradient_norm: Float[Array, " k"]
    multiplier: Float[Array, " k"]
    would_shrink: Bool[Array, " k"]
    constraint: Float[Array, " k"]
    relative_constraint: Float[Array, " k"]
    alignment: Float[Array, " k"]
    dead: Bool[Array, " k"]
    masked: Bool[Array, " k"]
    block_ratio: Float[Array, " k"] | None = None
    split_strength: Float[Array, " k"] | None = None
    split_direction: Float[Array, "k d"] | None = None


class FreeAtom(eqx.Module):
    r"""The free-atom test (THEORY 3).

    Attributes:
        ratio: $\max_i \|r_i\| / \lambda$; > 1 means a new atom lowers $F$ (a non-local move).
        signal: the index $j$ achieving it.
        direction: $u = r_j / \|r_j\|$, where the new atom should go.
        slope: $dF/dt = \frac{w_j}{W}(\lambda - \|r_j\|)$ for code $t$ on signal $j$ (`jax.grad`).
    """

    ratio: Float[Array, ""]
    signal: Int[Array, ""]
    direction: Float[Array, " d"]
    slope: Float[Array, ""]


class OptimalityReport(eqx.Module):
    """Everything `residuals`/`certify` measure; `str(report)` prints a table, worst atoms first."""

    objective: Float[Array, ""]
    lam: Float[Array, ""]
    signals: SignalResiduals
    atoms: AtomResiduals
    free_atom: FreeAtom

    @property
    def stationary_residual(self) -> Float[Array, ""]:
        """Largest relative 2.2 constraint residual over atoms and relative KKT residual."""
        import jax.numpy as jnp

        kkt = jnp.max(self.signals.kkt) / self.lam
        return jnp.maximum(jnp.max(self.atoms.relative_constraint), kkt)

    def __str__(self) -> str:
        return format_report(self)


def format_report(report: OptimalityReport, rows: int = 10) -> str:
    a = report.atoms
    rel = np.asarray(a.relative_constraint)
    masked = np.asarray(a.masked)
    dead = np.asarray(a.dead)
    ratio = np.zeros_like(rel) if a.block_ratio is None else np.asarray(a.block_ratio)
    split = np.zeros_like(rel) if a.split_strength is None else np.asarray(a.split_strength)
    mass = np.asarray(a.mass)
    grad_norm = np.asarray(a.gradient_norm)
    order = [k for k in np.argsort(-(rel + 1e-3 * np.maximum(ratio - 1, 0))) if not masked[k]]
    lines = [
        f"{'atom':>5} {'mass':>10} {'|s/m-lam d|/lam':>16} {'|grad|':>10} "
        f"{'block':>8} {'split S':>10}  flags"
    ]
    for k in order[:rows]:
        flags = ",".join(
            f
            for f, on in (
                ("dead", dead[k]),
                ("shrinks", bool(np.asarray(a.would_shrink)[k])),
                ("saddle", ratio[k] > 1),
            )
            if on
        )
        lines.append(
            f"{k:>5} {mass[k]:>10.3g} {rel[k]:>16.3e} {grad_norm[k]:>10.3e} "
            f"{ratio[k]:>8.3f} {split[k]:>10.3e}  {flags}"
        )
    if len(order) > rows:
        lines.append(f"  ... {len(order) - rows} more atoms")
    s = report.signals
    fa = report.free_atom
    lines.append(
        f"F = {float(report.objective):.6g}, lam = {float(report.lam):.3g}; atoms: {len(order)} "
        f"({int(dead.sum())} dead, {int(masked.sum())} masked); max rel. constraint "
        f"{rel.max(initial=0):.2e}; max KKT {float(np.max(np.asarray(s.kkt))):.2e}; max gap "
        f"{float(np.max(np.asarray(s.gap))):.2e}; free atom max|r|/lam = {float(fa.ratio):.4f} "
        f"(signal {int(fa.signal)}, slope {float(fa.slope):.2e})"
    )
    return "\n".join(lines)
