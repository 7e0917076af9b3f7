r"""Float32 certificates and codes to a relative gap of about $10u$, not $d\,u\,\|r\|/\lambda$.

In float32 the rounding bound of the plain certificate (`DictionaryOperator.certified_certificate`)
is dominated by the correlations $\hat g_k = d_k\cdot\hat r$ of the support atoms: each is off
by up to $\gamma_d\|\hat r\|$, which enters the gap as $\|a\|_1\gamma_d\|\hat r\|$, a relative
gap of about $d\,u\,\|r\|/\lambda$ (4e-4 on a 64-dimensional problem), far above the default
tolerance 1e-6; and an exact solver's float32 support solve, rounded the same way, misses the
optimum by a similar amount. Both use only the support and the few atoms near the dual
constraint, so both are computed here in compensated arithmetic (`sparsedict/_compensated.py`)
on `size` gathered atoms per signal:

- **Residual.** $r = x - \sum_{j \in S} a_j d_j$ over the gathered support $S$, as an unevaluated
  sum $r_{hi} + r_{lo}$ with a bound $\epsilon$ of order $u^2$; support atoms beyond `size` are
  reconstructed plainly, with the plain bound.
- **Correlations** $g_k = d_k\cdot(r_{hi} + r_{lo})$ of the gathered atoms, compensated: the
  support, then the atoms whose plain bound $\hat g_k + \delta_k$ exceeds $\lambda$ (only they can
  move the dual scaling). Every other atom keeps its plain correlation and bound.
- **Certificate.** `_objective.certified_certificate` with these correlations and bounds: what is
  left of its rounding is the evaluation of the gap itself, a few $u\lambda\|a\|_1$.
- **Polish.** One step of iterative refinement of the support solve (Newton's step on the
  support, $a_S \leftarrow a_S + G_{SS}^{-1}(g_S - \lambda)$, with the compensated $g_S$), which
  converges to the float32 codes of the exact optimum on that support when
  $\kappa(G_{SS})\,u < 1$. Atoms off the support whose compensated correlation exceeds
  $\lambda$ (violations that plain float32 could not see) enter the support of the step. The
  driver keeps whichever of the codes before and after has the lower certified gap.
"""

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from .._compensated import combination
from .._objective import CertificateBound, certified_certificate, gamma
from ._problem import DictionaryOperator, Signal

# Tikhonov ridge of the polish system in machine epsilons times the mean atom norm^2 (as in the
# active set's support solves): it keeps the Cholesky factor defined for duplicated atoms.
_RIDGE_EPS = 64.0


def compensated_size(k: int, d: int) -> int:
    """Atoms gathered per signal: enough for an optimal support ($\\le d$) and a few atoms at the
    dual constraint, at most 64 (wider supports keep the plain bound on the rest)."""
    return min(k, d + 1, 64)


def _residual(
    op: DictionaryOperator, sig: Signal, a, idx: Int[Array, " m"], use: Bool[Array, " m"]
):
    r"""$x - aD$ as `(r_hi, r_lo, eps)`: the atoms `idx[use]` subtracted in compensated
    arithmetic, every other nonzero code plainly; $\|x - aD - (r_{hi} + r_{lo})\| \le$ `eps`."""
    work = sig.x.dtype
    rows = op.D[idx].astype(work)  # exact: the stored dictionary upcast
    coef = jnp.where(use, a[idx], 0.0)
    gathered = jnp.zeros(a.shape, bool).at[idx].max(use)  # well defined for repeated indices
    rest = jnp.where(gathered, 0.0, a)  # support atoms that were not gathered
    with jax.default_matmul_precision("highest"):
        rest_rec = op.reconstruct(rest)
    rest_error = op.reconstruction_error(rest, jnp.zeros((), work))
    # x - sum_j coef_j d_j - rest_rec: the plain part enters as one more exact term
    r_hi, r_lo, bound = combination(
        sig.x, jnp.concatenate([rows, rest_rec[None]]), jnp.append(-coef, -1.0).astype(work)
    )
    return r_hi, r_lo, jnp.sum(bound) * (1.0 + gamma(r_hi.shape[-1], work)) + rest_error


def _correlations(op, rows, r_hi, r_lo, eps):
    r"""$g_k = d_k\cdot r$ for the gathered `rows`, with $\|r - (r_{hi} + r_{lo})\| \le$ `eps`:
    `(g, bound)` with $|g_k - \hat g_k| \le$ `bound`$_k$ before the final rounding of $\hat g_k$."""
    work = r_hi.dtype
    d = r_hi.shape[-1]
    u = float(jnp.finfo(work).eps) / 2
    hi, lo, bound = combination(jnp.zeros(rows.shape[0], work), rows.T, r_hi)
    with jax.default_matmul_precision("highest"):
        small = rows @ r_lo
    norms = jnp.sqrt(jnp.sum(rows * rows, axis=-1)) * (1.0 + gamma(d + 2, work))
    r_lo_norm = jnp.sqrt(r_lo @ r_lo) * (1.0 + gamma(d + 2, work))
    tail = lo + small
    g = hi + tail
    bound = (
        bound
        + gamma(d, work) * norms * r_lo_norm
        + norms * eps
        + u * (jnp.abs(lo) + jnp.abs(small) + jnp.abs(tail))
    )
    return g, bound * (1.0 + 8 * u)


def compensated_certificate(
    op: DictionaryOperator, sig: Signal, a: Float[Array, " k"], size: int
) -> tuple[CertificateBound, Array]:
    r"""The rigorous certificate of `a` (never below its exact gap), with the support and the
    atoms near the dual constraint (at most `size`) in compensated arithmetic. Returns it and
    the correlations it used."""
    r, g, _, g_error = op.residual_and_correlations(sig, a)
    priority = jnp.where(a > 0, jnp.inf, g + g_error - sig.lam)
    if op.atom_mask is not None:
        priority = jnp.where(op.atom_mask, priority, -jnp.inf)
    top, idx = jax.lax.top_k(priority, size)
    chosen = top > 0
    r_hi, r_lo, eps = _residual(op, sig, a, idx, chosen & (a[idx] > 0))
    rows = op.D[idx].astype(sig.x.dtype)
    g_c, g_c_error = _correlations(op, rows, r_hi, r_lo, eps)
    corr = g.at[idx].set(jnp.where(chosen, g_c, g[idx]))
    corr_error = g_error.at[idx].set(jnp.where(chosen, g_c_error, g_error[idx]))
    d = r_hi.shape[-1]
    r_lo_norm = jnp.sqrt(r_lo @ r_lo) * (1.0 + gamma(d + 2, r_hi.dtype))
    bound = certified_certificate(r_hi, corr, a, sig.lam, r_lo_norm + eps, corr_error, op.atom_mask)
    del r
    return bound, corr


def polish(
    op: DictionaryOperator,
    sig: Signal,
    a: Float[Array, " k"],
    g: Float[Array, " k"],
    size: int,
    enter: Bool[Array, " k"],
):
    r"""One Newton step on the support $S$ of `a` and the atoms `enter`,
    $a_S \leftarrow \max(0, a_S + G_{SS}^{-1}(g_S - \lambda))$, from the correlations `g` of
    `compensated_certificate` (compensated on $S$): an exchange step of the active set in
    compensated arithmetic. Codes whose new support does not fit `size` are returned unchanged."""
    k = a.shape[0]
    work = sig.x.dtype
    support = (a > 0) | enter
    fits = jnp.sum(support) <= size
    idx = jnp.nonzero(support, size=size, fill_value=k)[0]
    valid = idx < k
    safe = jnp.minimum(idx, k - 1)
    rows = jnp.where(valid[:, None], op.D[safe].astype(work), 0.0)
    with jax.default_matmul_precision("highest"):
        gram_s = rows @ rows.T
    both = valid[:, None] & valid[None, :]
    gram_s = jnp.where(both, gram_s, 0.0)
    diag = jnp.diagonal(gram_s)
    mean_norm = jnp.sum(jnp.where(valid, diag, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    ridge = _RIDGE_EPS * jnp.finfo(work).eps * jnp.maximum(mean_norm, 1.0)
    system = gram_s + jnp.diag(jnp.where(valid, ridge, 1.0))
    rhs = jnp.where(valid, g[safe] - sig.lam, 0.0)
    step = jsl.cho_solve(jsl.cho_factor(system, lower=True), rhs)
    new = jnp.maximum(a[safe] + step, 0.0)
    polished = a.at[idx].set(jnp.where(valid, new, 0.0), mode="drop")
    ok = fits & jnp.all(jnp.isfinite(polished))
    return op.project(jnp.where(ok, polished, a))
