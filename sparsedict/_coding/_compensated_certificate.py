r"""Float32 certificates and codes far below the plain rounding bound $d\,u\,\|r\|/\lambda$.

In float32 the rounding bound of the plain certificate (`DictionaryOperator.certified_certificate`)
is dominated by the correlations $\hat g_k = d_k\cdot\hat r$ of the support atoms: each is off
by up to $\gamma_d\|\hat r\|$, which enters the gap as $\|a\|_1\gamma_d\|\hat r\|$, a relative
gap of about $d\,u\,\|r\|/\lambda$ (4e-4 on a 64-dimensional problem), far above the default
tolerance 1e-6. Even the exact canonical gap of float32 codes (dual point $s\,r$) is first order
in their rounding, about $u\|aD\|^2/P$. Both are mended on `size` gathered atoms per signal (the
support, then the atoms nearest the dual constraint), in compensated arithmetic
(`sparsedict/_compensated.py`):

- **Terms** (`compensated_terms`): the residual $r = x - aD$ as an unevaluated sum
  $r_{hi} + r_{lo}$ with a bound of order $u^2$ (support atoms beyond `size` reconstructed
  plainly, with the plain bound), and the correlations $d_k\cdot r$ of the gathered atoms.
- **Polish** (`polish`): one Newton step on the support,
  $a_S \leftarrow a_S + G_{SS}^{-1}(g_S - \lambda)$, with the compensated excess $g_S - \lambda$;
  atoms whose compensated correlation exceeds $\lambda$ enter the support. The step's rounding
  error is kept: the refined codes $\tilde a = a + a_{lo}$ are in twice the precision. Their terms
  follow from the small step in plain arithmetic (`moved`).
- **Certificate** (`compensated_certificate`): the gap of the float32 codes at the dual point
  of the refined codes, where every term is small and so is its rounding.

The driver keeps whichever of the codes before and after the polish has the lower certified gap.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from .._compensated import combination, two_sum
from .._objective import Certificate, CertificateBound, gamma, primal_from_terms
from ._problem import DictionaryOperator, Signal, ridged_support_system
from ._select import largest_indices


def compensated_size(k: int, d: int) -> int:
    """Atoms gathered per signal: enough for an optimal support ($\\le d$) and a few atoms at the
    dual constraint, at most 64 (wider supports keep the plain bound on the rest)."""
    return min(k, d + 1, 64)


def _residual(
    op: DictionaryOperator,
    sig: Signal,
    a: Float[Array, " k"],
    a_lo: Float[Array, " k"],
    idx: Int[Array, " m"],
    use: Bool[Array, " m"],
):
    r"""$x - (a + a_{lo})D$ as `(r_hi, r_lo, eps)`: the atoms `idx[use]` subtracted in compensated
    arithmetic, every other nonzero code plainly (`a_lo` is zero off `idx[use]`);
    $\|x - (a + a_{lo})D - (r_{hi} + r_{lo})\| \le$ `eps`."""
    work = sig.x.dtype
    rows = op.D[idx].astype(work)  # exact: the stored dictionary upcast
    coef = jnp.where(use, a[idx], 0.0)
    coef_lo = jnp.where(use, a_lo[idx], 0.0)
    gathered = jnp.zeros(a.shape, bool).at[idx].max(use)  # well defined for repeated indices
    rest = jnp.where(gathered, 0.0, a)  # support atoms that were not gathered
    with jax.default_matmul_precision("highest"):
        rest_rec = op.reconstruct(rest)
    rest_error = op.reconstruction_error(rest, jnp.zeros((), work))
    # x - rest_rec - sum_j (coef_j + coef_lo_j) d_j, the used rows first (the support leads
    # `idx`), so the loop stops after the last used row; the plain part is one more exact term
    order = jnp.argsort(~use, stable=True)
    count = jnp.sum(use) + 1
    A = jnp.concatenate([rest_rec[None], rows[order]])
    coefs = jnp.concatenate([-jnp.ones(1, work), -coef[order]])
    coefs_lo = jnp.concatenate([jnp.zeros(1, work), -coef_lo[order]])
    r_hi, r_lo, bound = combination(sig.x, A, coefs, coefs_lo, count)
    return r_hi, r_lo, jnp.sum(bound) * (1.0 + gamma(r_hi.shape[-1], work)) + rest_error


def _correlations(rows, r_hi, r_lo, eps):
    r"""$g_k = d_k\cdot r$ for the gathered `rows`, where $\|r - (r_{hi} + r_{lo})\| \le$ `eps`:
    `(hi, lo, bound)` with $|g_k - (hi_k + lo_k)| \le$ `bound`$_k$."""
    work = r_hi.dtype
    d = r_hi.shape[-1]
    u = float(jnp.finfo(work).eps) / 2
    hi, lo, bound = combination(jnp.zeros(rows.shape[0], work), rows.T, r_hi)
    with jax.default_matmul_precision("highest"):
        small = rows @ r_lo
    norms = jnp.sqrt(jnp.sum(rows * rows, axis=-1)) * (1.0 + gamma(d + 2, work))
    r_lo_norm = jnp.sqrt(r_lo @ r_lo) * (1.0 + gamma(d + 2, work))
    tail = lo + small
    bound = bound + gamma(d, work) * norms * r_lo_norm + norms * eps + u * jnp.abs(tail)
    return hi, tail, bound * (1.0 + 8 * u)


class CompensatedTerms(NamedTuple):
    r"""The residual $\tilde r = x - \tilde aD$ of refined codes as `r_hi + r_lo` (error at most
    `eps`), and the correlations $\tilde g_k = d_k\cdot\tilde r$ of the gathered atoms `idx`
    (those with `chosen`) as `hi + tail` (error at most `beta`)."""

    idx: Int[Array, " m"]
    chosen: Bool[Array, " m"]
    r_hi: Float[Array, " d"]
    r_lo: Float[Array, " d"]
    eps: Float[Array, ""]
    hi: Float[Array, " m"]
    tail: Float[Array, " m"]
    beta: Float[Array, " m"]


def compensated_terms(
    op: DictionaryOperator, sig: Signal, a: Float[Array, " k"], size: int
) -> CompensatedTerms:
    r"""`CompensatedTerms` of the codes `a`: the support and the atoms nearest the dual constraint
    by their plain bound, `size` in all, gathered and computed in compensated arithmetic."""
    _, g, _, g_error = op.residual_and_correlations(sig, a)
    priority = jnp.where(a > 0, jnp.inf, g + g_error - sig.lam)
    if op.atom_mask is not None:
        priority = jnp.where(op.atom_mask, priority, -jnp.inf)
    # every gathered atom gets compensated correlations (they cost the same for all `size`):
    # the support first, then the atoms closest to the dual constraint, which a polish step
    # may push over it
    idx = largest_indices(priority, size)
    chosen = priority[idx] > -jnp.inf
    use = chosen & (a[idx] > 0)
    r_hi, r_lo, eps = _residual(op, sig, a, jnp.zeros_like(a), idx, use)
    hi, tail, beta = _correlations(op.D[idx].astype(sig.x.dtype), r_hi, r_lo, eps)
    return CompensatedTerms(idx, chosen, r_hi, r_lo, eps, hi, tail, beta)


def moved(
    op: DictionaryOperator,
    terms: CompensatedTerms,
    delta: Float[Array, " p"],
    rows: Float[Array, "p d"],
) -> CompensatedTerms:
    r"""The terms of $\tilde a + \Delta$, $\Delta$ = `delta` on the atoms of `rows`: the change
    $v = \Delta D$ is small next to $\tilde r$ (a polish step), so $\tilde r - v$ and
    $\tilde g_k - d_k\cdot v$ move only the low parts, in plain arithmetic, and their rounding
    is added to the bounds."""
    work = terms.r_hi.dtype
    u = float(jnp.finfo(work).eps) / 2
    d = terms.r_hi.shape[-1]
    inflate = 1.0 + gamma(d + 2, work)
    with jax.default_matmul_precision("highest"):
        v = delta @ rows
        row_norms = jnp.sqrt(jnp.sum(rows * rows, axis=-1)) * inflate
        v_error = gamma(delta.shape[0] + 1, work) * (jnp.abs(delta) @ row_norms)  # ||v^ - v||
        r_lo = terms.r_lo - v
        gathered = op.D[terms.idx].astype(work)
        w = gathered @ v
    norms = jnp.sqrt(jnp.sum(gathered * gathered, axis=-1)) * inflate
    v_norm = jnp.sqrt(v @ v) * inflate
    eps = (terms.eps + v_error + u * jnp.sqrt(r_lo @ r_lo) * inflate) * (1.0 + 4 * u)
    tail = terms.tail - w
    beta = terms.beta + norms * (v_error + gamma(d, work) * v_norm) + u * jnp.abs(tail)
    return terms._replace(r_lo=r_lo, eps=eps, tail=tail, beta=beta * (1.0 + 4 * u))


class RefinedCodes(NamedTuple):
    r"""Codes `a` in the working dtype and a low part `lo`: the refined codes $\tilde a = a + lo$
    (a double-word number per atom; `lo = 0` for plain codes)."""

    a: Float[Array, " k"]
    lo: Float[Array, " k"]


def compensated_certificate(
    op: DictionaryOperator, sig: Signal, codes: RefinedCodes, terms: CompensatedTerms
) -> tuple[CertificateBound, Array, Array]:
    r"""A rigorous bound on the duality gap of the codes `codes.a` (never below their exact gap),
    at the dual point of the refined codes $\tilde a = a + a_{lo}$ ($a_{lo}$ = `codes.lo`).

    With $\tilde r = x - \tilde aD$, $\tilde g = D\tilde r$ and the dual point
    $\theta = (1 - \sigma)\tilde r$, the gap of `a` ($r = x - aD = \tilde r + a_{lo}D$) is

    $$P(a) - \mathcal{D}(\theta) = \textstyle\sum_k a_k\big((\lambda - \tilde g_k)
      + \sigma\tilde g_k\big) + \tfrac12\|a_{lo}D + \sigma\tilde r\|^2,$$

    and $\theta$ is dual feasible when $\sigma \ge E/\lambda$, $E \ge \max_k \tilde g_k -
    \lambda$ (then $(1 - \sigma)\tilde g_k \le (1 - E/\lambda)(\lambda + E) \le \lambda$).
    Every term is small near the optimum, so their rounding is small too: $\tilde g_k - \lambda$
    comes from the compensated $hi_k + lo_k$ of the support and the atoms near the constraint
    (`size` gathered atoms), the plain correlations and bounds elsewhere; $\sigma$ is never
    rounded into a scaling $1 - \sigma$. When `a_lo` is the rounding error of float32 codes
    polished in twice the precision (`polish`), the gap is of order $u^2$, where the dual point
    of `a` itself would leave a first-order gap of about $u\|aD\|^2$. The gap is scaled by
    $P / P_-$ ($P_-$ a lower bound on the exact primal) so that `gap / primal` bounds the exact
    relative gap. Returns the bound, the correlations $\tilde g$ and the excesses
    $\tilde g - \lambda$ (both compensated where gathered: the excess is not rounded through
    $\tilde g$)."""
    a, a_lo = codes
    work = sig.x.dtype
    u = float(jnp.finfo(work).eps) / 2
    d = sig.x.shape[-1]
    lam = sig.lam
    r, g, r_error, g_error = op.residual_and_correlations(sig, a)
    norms = op.atom_norms()
    nnz = jnp.sum(a != 0)
    shift = jnp.sum(jnp.abs(a_lo) * norms) * (1.0 + gamma(nnz + 2, work))  # >= ||a_lo D||
    g_error = g_error + norms * shift  # plain g of a, against g~ of a + a_lo
    idx, chosen = terms.idx, terms.chosen
    r_hi, r_lo, eps = terms.r_hi, terms.r_lo, terms.eps
    hi, tail, beta = terms.hi, terms.tail, terms.beta

    # excess_k ~ g~_k - lam and w_k >= |g~_k - lam - excess_k| (its rounding included)
    plain_excess = g - lam
    plain_w = g_error + 2 * u * jnp.abs(plain_excess)
    head = hi - lam
    comp_excess = head + tail
    comp_w = beta + u * (jnp.abs(head) + 2 * jnp.abs(comp_excess))
    excess = plain_excess.at[idx].set(jnp.where(chosen, comp_excess, plain_excess[idx]))
    w = plain_w.at[idx].set(jnp.where(chosen, comp_w, plain_w[idx])) * (1.0 + 4 * u)
    upper = excess + w + 2 * u * jnp.abs(excess)  # rounding of the sum
    if op.atom_mask is not None:
        upper = jnp.where(op.atom_mask, upper, -jnp.inf)
    E = jnp.maximum(jnp.max(upper), 0.0)
    sigma = jnp.minimum(E / lam * (1.0 + 4 * u), 1.0)  # lam > 0; lam = 0 is handled below

    # sum_k a_k ((lam - g~_k) + sigma g~_k) <= sum_k a_k t_k
    t = (-excess + w) + sigma * (lam + jnp.abs(excess) + w)
    summands = a * t
    n_terms = gamma(nnz + 2, work)
    linear = jnp.sum(summands) + n_terms * jnp.sum(jnp.abs(summands)) * (1.0 + n_terms)
    inflate = 1.0 + gamma(d + 2, work)
    r_lo_norm = jnp.sqrt(r_lo @ r_lo) * inflate
    rho_tilde = jnp.sqrt(r_hi @ r_hi) * inflate + r_lo_norm + eps  # >= ||r~||
    quadratic = 0.5 * ((shift + sigma * rho_tilde) * (1.0 + 4 * u)) ** 2
    gap = jnp.maximum((linear + quadratic) * (1.0 + 8 * u), 0.0)
    # lam = 0 (nonnegative least squares): theta = r~ only if feasible; else the dual point 0
    gap = jnp.where((lam > 0) | (E == 0), gap, jnp.inf)

    l1 = jnp.sum(a)
    rho = jnp.sqrt(r @ r)
    rho_lo = jnp.maximum(rho * (1.0 - gamma(d + 2, work)) - r_error, 0.0)
    primal = primal_from_terms(rho * rho, l1, lam)
    primal_lo = (0.5 * rho_lo**2 + lam * l1 * (1.0 - n_terms)) * (1.0 - 4 * u)
    tiny = jnp.finfo(work).tiny
    ratio = jnp.where(primal > 0, primal / jnp.maximum(primal_lo, tiny), 1.0)
    gap = gap * ratio * (1.0 + 4 * u)
    cert = Certificate(primal=primal, dual=primal - gap, gap=gap)
    corr = g.at[idx].set(jnp.where(chosen, hi + tail, g[idx]))
    bound = CertificateBound(certificate=cert, nominal=gap, rounding=jnp.zeros_like(gap))
    return bound, corr, excess


def polish(
    op: DictionaryOperator,
    sig: Signal,
    a: Float[Array, " k"],
    excess: Float[Array, " k"],
    size: int,
):
    r"""One Newton step on the support $S$ of `a` and the atoms whose `excess` is positive,
    $a_S \leftarrow \max(0, a_S + G_{SS}^{-1}(g_S - \lambda))$, from the excesses $g - \lambda$
    of `compensated_certificate` (compensated on $S$): an exchange step of the active set in
    compensated arithmetic. Returns the `RefinedCodes`: the float32 codes and their rounding
    error `lo` (the step computed in twice the precision is `a + lo`), and the change of the
    refined codes with the gathered atoms it is on (for `moved`); codes whose new support does
    not fit `size` are returned unchanged, with `lo = 0` and no change."""
    k = a.shape[0]
    work = sig.x.dtype
    support = (a > 0) | (excess > 0)
    fits = jnp.sum(support) <= size
    idx = jnp.nonzero(support, size=size, fill_value=k)[0]
    valid = idx < k
    safe = jnp.minimum(idx, k - 1)
    rows = jnp.where(valid[:, None], op.D[safe].astype(work), 0.0)
    with jax.default_matmul_precision("highest"):
        system, _ = ridged_support_system(rows @ rows.T, valid)
    rhs = jnp.where(valid, excess[safe], 0.0)
    step = jsl.cho_solve(jsl.cho_factor(system, lower=True), rhs)
    # a + step in twice the precision: the float32 codes and their rounding error
    new, new_lo = two_sum(a[safe], step)
    keep = valid & (new > 0)
    polished = a.at[idx].set(jnp.where(keep, new, 0.0), mode="drop")
    polished_lo = jnp.zeros_like(a).at[idx].set(jnp.where(keep, new_lo, 0.0), mode="drop")
    ok = fits & jnp.all(jnp.isfinite(polished)) & jnp.all(jnp.isfinite(polished_lo))
    if op.atom_mask is not None:
        ok = ok & ~jnp.any((polished > 0) & ~op.atom_mask)
    # the change of the refined codes: a + step = new + new_lo exactly where kept
    delta = jnp.where(ok & valid, jnp.where(keep, step, -a[safe]), 0.0)
    refined = RefinedCodes(jnp.where(ok, polished, a), jnp.where(ok, polished_lo, 0.0))
    return refined, delta, rows
