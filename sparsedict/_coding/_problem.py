r"""What a coding solver sees: one signal's data and the shared dictionary operator.

Solvers are written for one signal and batched with `vmap`; the dictionary (and its Gram matrix
$G = D D^\top$) is shared, never batched.

**Mixed precision.** The operator may store $D$ in a *matmul dtype* narrower than the *working
dtype* of the signals, codes and certificates (bfloat16 or float16 under float32; also float32
under float64). Every product with $D$ then runs on matmul-dtype operands with working-dtype
accumulation (`preferred_element_type`) and is exact to working precision for the stored, rounded
dictionary $D_{\text{low}}$: a working-dtype vector $v$ is split exactly into $p$ matmul-dtype
pieces, $v = \sum_{j \le p} 2^{e_j} v_j$ up to $2^{-pt}\max|v|$ ($t$ significand bits of the matmul
dtype, $p = \lceil t_{\text{work}} / t \rceil$: 3 for bfloat16 or float16 under float32), and
$v D_{\text{low}} = \sum_j 2^{e_j} (v_j D_{\text{low}})$, one product of $p$ stacked rows. The
scales $2^{e_j}$ (only for matmul dtypes of narrower exponent range) keep the pieces clear of
overflow and underflow. The Gram matrix $D_{\text{low}} D_{\text{low}}^\top$ is computed from
matmul-dtype operands (a product of two of them is exact in the working dtype) but kept in the
working dtype: rounding it would change the problem.
"""

import functools
import math
import operator
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._objective import (
    Bounded,
    Certificate,
    CertificateBound,
    certificate_from_terms,
    certified_certificate,
    gamma,
)


def _precision(low):
    """One exact pass over matmul-dtype operands, whatever `jax_default_matmul_precision` says:
    the plain algorithm for 16-bit operands, and no TF32 (or one-pass bfloat16) for float32 ones."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(low).itemsize >= 4 else jax.lax.Precision.DEFAULT


def _bits(dtype) -> int:
    return jnp.finfo(dtype).nmant + 1


def piece_count(work, low) -> int:
    """Pieces of the matmul dtype `low` that hold every significand bit of the working dtype."""
    return math.ceil(_bits(work) / _bits(low))


def _split_constants(work, low):
    """`(p, remainder, spread)` of `split_matmul`'s rounding bounds: the pieces, the relative
    remainder $2^{p(1-t)}$ left after them, and $2^{2-t}$ ($t$ the matmul dtype's bits)."""
    p = piece_count(work, low)
    bits = _bits(low)
    return p, 2.0 ** (p * (1 - bits)), 2.0 ** (2 - bits)


def split_matmul(v: Float[Array, "*batch k"], M: Float[Array, "k m"]) -> Float[Array, "*batch m"]:
    """`v @ M` accumulated in `v`'s dtype; exact to that precision when `M` is stored narrower."""
    work, low = v.dtype, M.dtype
    if work == low:
        return v @ M
    rescale = jnp.finfo(low).maxexp < jnp.finfo(work).maxexp
    limit = jnp.finfo(work).maxexp - 2  # 2**e stays a normal number of the working dtype
    pieces, scales, rest = [], [], v
    for _ in range(piece_count(work, low)):
        if rescale:
            _, e = jnp.frexp(jnp.max(jnp.abs(rest), axis=-1, keepdims=True))
            scale = jnp.ldexp(jnp.ones((), work), jnp.clip(e, -limit, limit))
            piece = (rest / scale).astype(low)
            rest = rest - piece.astype(work) * scale  # exact: the rounding error of the piece
        else:
            scale, piece = None, rest.astype(low)
            rest = rest - piece.astype(work)
        pieces.append(piece)
        scales.append(scale)
    products = jnp.matmul(
        jnp.stack(pieces), M, preferred_element_type=work, precision=_precision(low)
    )
    terms = [p if s is None else p * s for p, s in zip(products, scales, strict=False)]
    return functools.reduce(operator.add, terms[::-1])  # smallest first


def gram(M: Float[Array, "k m"], work) -> Float[Array, "k k"]:
    """`M M^T` accumulated in the working dtype `work` (operands stay in `M`'s dtype)."""
    if M.dtype == work:
        return M @ M.T
    return jnp.matmul(M, M.T, preferred_element_type=work, precision=_precision(M.dtype))


# Tikhonov ridge on a support system, in machine epsilons times the mean atom norm^2. It keeps
# Cholesky defined when atoms are duplicated (singular G_FF).
_RIDGE_EPS = 64.0


def ridged_support_system(gram_s: Float[Array, "s s"], valid: Bool[Array, " s"]):
    r"""`(system, gram_s)` for a support buffer: $G_{FF}$ with the padding slots (`valid` false)
    zeroed, and the system to factor, $G_{FF}$ plus a ridge of `_RIDGE_EPS` machine epsilons
    times the mean atom norm$^2$ on the support and the identity on the padding slots."""
    gram_s = jnp.where(valid[:, None] & valid[None, :], gram_s, 0.0)
    diag = jnp.diagonal(gram_s)
    mean_norm = jnp.sum(jnp.where(valid, diag, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    ridge = _RIDGE_EPS * jnp.finfo(gram_s.dtype).eps * jnp.maximum(mean_norm, 1.0)
    return gram_s + jnp.diag(jnp.where(valid, ridge, 1.0)), gram_s


def atom_norm_bounds(D: Float[Array, "k d"], work) -> Float[Array, " k"]:
    """Upper bounds on the row norms of `D`, computed in the working dtype `work`."""
    D = D.astype(work)
    return jnp.sqrt(jnp.sum(D * D, axis=-1)) * (1.0 + gamma(D.shape[-1] + 2, work))


class Signal(NamedTuple):
    """One signal: `x`, its correlations `c = D x`, `||x||` and its `lam`."""

    x: Float[Array, " d"]
    c: Float[Array, " k"]
    x_norm: Float[Array, ""]
    lam: Float[Array, ""]

    @property
    def x_sq(self) -> Float[Array, ""]:
        """`||x||^2`, as the square of the stored norm (the Gram-form residual starts from it)."""
        return self.x_norm**2


class DictionaryOperator(eqx.Module):
    r"""The dictionary with masked atoms zeroed, its Gram matrix when it is cheaper, and the mask.

    Correlations of the residual, $g = D(x - aD) = c - aG$, cost $k^2$ from the Gram matrix and
    $2kd$ from $D$; the Gram form is used when `gram` is present. `D` may be stored in a narrower
    matmul dtype than `gram`, `lipschitz` and the codes (see the module docstring).
    """

    D: Float[Array, "k d"]
    gram: Float[Array, "k k"] | None
    atom_mask: Bool[Array, " k"] | None
    lipschitz: Float[Array, ""]  # lambda_max(D D^T), the gradient's Lipschitz constant
    norms: Float[Array, " k"] | None = None  # upper bounds on the atom norms (atom_norm_bounds)

    def reconstruct(self, a: Float[Array, "*batch k"]) -> Float[Array, "*batch d"]:
        """`a D`."""
        return split_matmul(a, self.D)

    def correlate(self, r: Float[Array, "*batch d"]) -> Float[Array, "*batch k"]:
        """`D r` (as `r D^T`)."""
        return split_matmul(r, self.D.T)

    def correlations_and_residual_sq(self, sig: Signal, a: Float[Array, " k"]):
        r"""$g = D r$ and $\|r\|^2$ for codes `a`.

        In Gram form $\|r\|^2 = \|x\|^2 - a\cdot(c + g)$, which cancels when $r$ is small: for
        stopping heuristics only, never for a certificate (`certified_certificate`)."""
        if self.gram is not None:
            g = sig.c - a @ self.gram
            return g, sig.x_sq - a @ (sig.c + g)
        r = sig.x - self.reconstruct(a)
        return self.correlate(r), r @ r

    def certificate(self, sig: Signal, a: Float[Array, " k"]) -> tuple[Certificate, Array]:
        r"""The plain certificate (`certificate_from_terms`), in Gram form when `gram` is present:
        cheap, but its $\|r\|^2$ cancels when $r$ is small next to $x$ (no rounding bound)."""
        g, r_sq = self.correlations_and_residual_sq(sig, a)
        return certificate_from_terms(r_sq, g, a, sig.lam, sig.x_norm, self.atom_mask), g

    def certified_certificate(
        self, sig: Signal, a: Float[Array, " k"]
    ) -> tuple[CertificateBound, Array]:
        r"""The certificate from the explicit residual $\hat r = x - aD$, with a rigorous bound
        on its rounding (`_objective.certified_certificate`): the reported gap is never below
        the exact gap of `a` for the stored dictionary. Returns it and $\hat g = D\hat r$."""
        r, g, r_error, g_error = self.residual_and_correlations(sig, a)
        bound = certified_certificate(
            Bounded(r, r_error), Bounded(g, g_error), a, sig.lam, self.atom_mask
        )
        return bound, g

    def residual_and_correlations(self, sig: Signal, a: Float[Array, " k"]):
        r"""$\hat r = x - aD$ and $\hat g = D\hat r$ as computed, with bounds on their errors
        against the exact $r$ and $g = Dr$: `(r, g, r_error, g_error)`,
        $\|\hat r - r\| \le$ `r_error` and $|\hat g_k - g_k| \le$ `g_error`$_k$.

        Forward error bounds: $\|\hat r - r\| \le \gamma_{n_a+1}(\|x\| + \sum_j a_j\|d_j\|)$
        ($n_a$ nonzero codes) and $|\hat g_k - d_k\cdot\hat r| \le \gamma_d \|d_k\|\|\hat r\|$,
        so $|\hat g_k - g_k| \le \|d_k\|(\gamma_d\|\hat r\| + \epsilon_r)$; with a narrower
        matmul dtype, the split of `split_matmul` adds its pieces to $n$ and its remainder
        $2^{p(1-t)}\max|v|$ per entry.
        """
        work = sig.x.dtype
        u = float(jnp.finfo(work).eps) / 2
        d = sig.x.shape[-1]
        with jax.default_matmul_precision("highest"):  # the bounds assume no TF32 passes
            r = sig.x - self.reconstruct(a)
            g = self.correlate(r)
        norms = self.atom_norms()
        inflate = 1.0 + gamma(d + 2, work)
        r_norm = jnp.sqrt(r @ r) * inflate
        r_error = self.reconstruction_error(a, sig.x_norm * inflate)
        if self.D.dtype == work:
            g_error = norms * (gamma(d, work) * r_norm + r_error)
        else:  # split products (see the module docstring)
            p, remainder, spread = _split_constants(work, self.D.dtype)
            r_max = jnp.max(jnp.abs(r)) * math.sqrt(d)
            g_error = norms * (
                gamma(d + p, work) * (1.01 * r_norm + spread * r_max) + remainder * r_max + r_error
            )
        return r, g, r_error, g_error * (1.0 + 8 * u)

    def reconstruction_error(self, a: Float[Array, " k"], x_norm) -> Float[Array, ""]:
        r"""A bound on $\|\mathrm{fl}(x - aD) - (x - aD)\|$ for any $x$ of norm at most
        `x_norm` (0 bounds $\|\mathrm{fl}(aD) - aD\|$)."""
        work = x_norm.dtype
        u = float(jnp.finfo(work).eps) / 2
        norms = self.atom_norms()
        nnz = jnp.sum(a != 0)
        weighted = (a @ norms) * (1.0 + gamma(nnz + 1, work))
        if self.D.dtype == work:
            r_error = gamma(nnz + 1, work) * (x_norm + weighted)
        else:
            p, remainder, spread = _split_constants(work, self.D.dtype)
            support = jnp.sum(jnp.where(a != 0, norms, 0.0)) * jnp.max(a)
            r_error = (
                gamma(nnz + p + 1, work) * (x_norm + 1.01 * weighted + spread * support)
                + remainder * support
            )
        return r_error * (1.0 + 8 * u)

    def atom_norms(self) -> Float[Array, " k"]:
        r"""Upper bounds on the atom norms $\|d_k\|$ (zero for masked atoms), working dtype."""
        if self.norms is not None:
            return self.norms
        return atom_norm_bounds(self.D, self.lipschitz.dtype)

    def project(self, a: Float[Array, " k"]) -> Float[Array, " k"]:
        """Clip to the nonnegative orthant and zero the masked atoms."""
        a = jnp.maximum(a, 0.0)
        return a if self.atom_mask is None else jnp.where(self.atom_mask, a, 0.0)


def signals(X: Float[Array, "n d"], op: DictionaryOperator, lam: Float[Array, " n"]) -> Signal:
    """The batch of signals (rows of X, in the working dtype) with their correlations `X D^T`."""
    X_norm = jnp.linalg.norm(X, axis=-1)
    return Signal(x=X, c=op.correlate(X), x_norm=X_norm, lam=lam)
