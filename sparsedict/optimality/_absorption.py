r"""The absorption criterion (THEORY 4.4): can a child atom absorb a parent, noiseless limit.

In the $\lambda \to 0$ problem $V(D) = \sum_i \min \{\|a\|_1 : a D = x_i,\ a \ge 0\}$, rotate a
child atom $d_j$ toward a parent $d_k$: $d_j(\epsilon) = (d_j + \epsilon t) / \|d_j + \epsilon
t\|$ with the tangent $t = d_k - (d_j \cdot d_k) d_j$ (so $\|d_j + \epsilon t\| = 1 +
O(\epsilon^2)$). Every signal $i$ with $a_{ij} > 0$ loses $\epsilon a_{ij} t$ from its
reconstruction, which the other codes must make up at first order: $\delta$ with
$\delta D = -a_{ij} t$, free on the support of $a_i$ and nonnegative off it. By positive
homogeneity the cheapest such change costs $a_{ij} v_i$ with the small linear program

$$v_i = \min_\delta\ \mathbf 1^\top \delta \quad \text{s.t.} \quad \delta D = -t,\quad
\delta_m \ge 0 \ (a_{im} = 0),$$

and the slope of the L1 cost is $\sum_i a_{ij} v_i$ (an upper bound on the derivative of
$V$; equal to it when the codes are the unique optimum). A negative slope certifies that moving
$d_j$ toward $d_k$ lowers the cost: the child absorbs the parent. When the child fires only
together with the parent ($\operatorname{supp} a_{:j} \subseteq \operatorname{supp} a_{:k}$),
$\delta = -e_k + (d_j \cdot d_k) e_j$ is feasible, so the slope is at most
$-(1 - d_j \cdot d_k) m_j$: Gribonval–Schnass style absorption. An infeasible program (the move
leaves the span of the supports) gives $+\infty$. One program per distinct support and pair.
"""

import equinox as eqx
import numpy as np
import scipy.optimize

from .. import _validation as check

# A slope per unit of child mass counts as negative below -this (the programs are solved to ~1e-9).
SLOPE_TOL = 1e-7
# Largest residual |aD - x| / |x| accepted for noiseless codes.
_REPRESENTATION_TOL = 1e-8


class Absorption(eqx.Module):
    r"""Result of [`absorption`][sparsedict.optimality.absorption] (k atoms).

    Attributes:
        slope: (k, k) slope of the L1 cost per unit of child mass $m_j$ when child $j$ (row) rotates
            toward parent $k$ (column); $+\infty$ where the move is infeasible, NaN on the diagonal
            and for unused children.
        absorbs: (k, k) `slope < -SLOPE_TOL`: child $j$ absorbs parent $k$.
        absorbable: (k,) atoms that some child absorbs (the parents).
        pairs: list of `(child, parent, slope)` with `absorbs` true, most negative slope first.
    """

    slope: np.ndarray
    absorbs: np.ndarray
    absorbable: np.ndarray
    pairs: list = eqx.field(static=True)


def _float64(a, name):
    return np.asarray(check.as_array(a, name), np.float64)


def noiseless_codes(X, D) -> np.ndarray:
    r"""Codes of the $\lambda \to 0$ problem: $\min \|a_i\|_1$ s.t. $a_i D = x_i$, $a_i \ge 0$."""
    X = _float64(X, "X")
    D = _float64(D, "D")
    k = D.shape[0]
    codes = np.zeros((X.shape[0], k))
    for i, x in enumerate(X):  # host-level diagnostic: one small program per signal
        out = scipy.optimize.linprog(np.ones(k), A_eq=D.T, b_eq=x, bounds=(0, None), method="highs")
        if out.status != 0:
            raise ValueError(
                f"X[{i}] is not a nonnegative combination of the atoms of D (the noiseless "
                "problem is infeasible): pass codes=, e.g. sparse_code(X, D, small_lam).codes"
            )
        codes[i] = out.x
    return codes


def _program(D, t, support):
    """`min 1.delta s.t. delta D = -t, delta >= 0 off the support` (+inf when infeasible)."""
    k = D.shape[0]
    bounds = [(None, None) if s else (0, None) for s in support]
    out = scipy.optimize.linprog(np.ones(k), A_eq=D.T, b_eq=-t, bounds=bounds, method="highs")
    if out.status == 2:
        return np.inf
    if out.status == 3:
        raise ValueError(
            "the codes are not optimal for the noiseless problem (a first-order move lowers the "
            "L1 cost without bound): solve them with noiseless_codes(X, D) or a smaller lam"
        )
    if out.status != 0:
        raise RuntimeError(f"linear program failed: {out.message}")
    return float(out.fun)


def absorption(X, D, codes=None, *, pairs=None) -> Absorption:
    r"""THEORY 4.4: which atoms would a child absorb in the noiseless limit.

    Arguments:
        X: signals (n, d), used to check the codes reconstruct them (noiseless representation).
        D: unit-norm atoms (k, d).
        codes: (n, k) nonnegative codes with `codes @ D = X`; default: solved with
            [`noiseless_codes`][sparsedict.optimality.noiseless_codes].
        pairs: optional list of `(child, parent)` index pairs to test (default: every ordered
            pair of distinct atoms in use).

    Returns:
        An [`Absorption`][sparsedict.optimality.Absorption]. A host-level diagnostic (float64,
        one small linear program per distinct support of each child and pair).
    """
    X = _float64(X, "X")
    D = _float64(D, "D")
    if X.ndim != 2 or D.ndim != 2 or D.shape[1] != X.shape[1]:
        raise ValueError(f"X must be (n, d) and D (k, d) with the same d, got {X.shape}, {D.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(D))):
        raise ValueError("X and D must be finite")
    norms = np.linalg.norm(D, axis=1)
    if np.any(np.abs(norms - 1) > 1e-6):
        raise ValueError("D has atoms whose norm is not 1: normalise its rows first")
    k = D.shape[0]
    codes = noiseless_codes(X, D) if codes is None else _float64(codes, "codes")
    if codes.shape != (X.shape[0], k) or np.any(codes < 0):
        raise ValueError(f"codes must be nonnegative with shape {(X.shape[0], k)}")
    misfit = np.linalg.norm(codes @ D - X, axis=1) / np.maximum(np.linalg.norm(X, axis=1), 1e-300)
    if misfit.max() > _REPRESENTATION_TOL:
        raise ValueError(
            f"codes @ D differs from X (relative misfit {misfit.max():.1e}): the absorption "
            "criterion is about the noiseless problem; pass its codes (noiseless_codes)"
        )
    active = codes > 0
    mass = codes.sum(axis=0)
    used = np.flatnonzero(mass > 0)
    if pairs is None:
        pairs = [(j, p) for j in used for p in used if j != p]
    slope = np.full((k, k), np.nan)
    for j, p in pairs:
        if not (0 <= j < k and 0 <= p < k) or j == p:
            raise ValueError(f"pairs must hold distinct atom indices in [0, {k}), got {(j, p)}")
        if mass[j] == 0:
            continue
        t = D[p] - (D[j] @ D[p]) * D[j]
        rows = np.flatnonzero(active[:, j])
        patterns, inverse = np.unique(active[rows], axis=0, return_inverse=True)
        values = np.array([_program(D, t, s) for s in patterns])
        with np.errstate(invalid="ignore"):
            total = np.sum(codes[rows, j] * values[inverse.reshape(-1)])
        slope[j, p] = total / mass[j]
    absorbs = np.nan_to_num(slope, nan=np.inf) < -SLOPE_TOL
    found = sorted(zip(*np.nonzero(absorbs), strict=True), key=lambda jp: slope[jp])
    return Absorption(
        slope=slope,
        absorbs=absorbs,
        absorbable=absorbs.any(axis=0),
        pairs=[(int(j), int(p), float(slope[j, p])) for j, p in found],
    )
