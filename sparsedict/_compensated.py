r"""Compensated (twice-the-working-precision) float32 sums of products, with rigorous bounds.

Error-free transformations (Knuth's TwoSum; Ogita, Rump and Oishi, *Accurate sum and dot
product*, SIAM J. Sci. Comput. 2005) write a sum of two floating-point numbers exactly as the
rounded sum plus an error term that is itself a floating-point number,
$a + b = s + e$ (barring overflow). A product is written exactly as four products of
half-length parts (`split`), each exact in float32. A sum of products then becomes exact
terms; TwoSums carry the leading value, and the error terms are summed plainly. The result
$hi + lo$ is as accurate as the plain sum computed in twice the working precision, and its error
is bounded a posteriori by $\gamma_m \sum_j |e_j|$ ($m$ terms, $\gamma_m = mu/(1 - mu)$).

The algorithms need round-to-nearest arithmetic evaluated as written, without reassociation.
Fused multiply-adds cannot change a result here, since every product is exact;
`tests/test_compensated.py` checks against exact rational arithmetic on the backend. The
coding driver calls them on signals scaled to $\max|x| < 1$, far from overflow.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._objective import gamma


def two_sum(a, b):
    """`(s, e)` with `s = fl(a + b)` and `a + b = s + e` exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def split(a: Float[Array, "*shape"]):
    """`a = hi + lo` exactly, `hi` the leading 12 significand bits of a float32 (the other bits
    masked off) and `lo` the remaining at most 12: a product of two parts is exact in float32.
    Bit masking, not Veltkamp's arithmetic split, so no fused multiply-add can alter it."""
    if a.dtype != jnp.float32:
        raise TypeError(f"split needs float32 parts, got {a.dtype}")
    hi = jax.lax.bitcast_convert_type(
        jax.lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000), jnp.float32
    )
    return hi, a - hi


def combination(
    start: Float[Array, " *shape"],
    A: Float[Array, " m *shape"],
    b: Float[Array, " m"],
    b_lo: Float[Array, " m"] | None = None,
    count=None,
):
    r"""$v = \text{start} + \sum_{j < \text{count}} (b_j + b^{lo}_j) A_j$ in compensated float32
    arithmetic, as `(hi, lo, bound)` with $|v - (hi + lo)| \le$ `bound` entrywise.

    Each product $b_j A_j$ is written exactly as the four products of the parts of `split`; the
    leading products are accumulated with TwoSum in one sum, the two middle ones in another
    (exactly, with their errors kept), and the errors, the last products and the small terms
    $b^{lo}_j A_j$ (a coefficient's low part in twice the precision, of order $u b_j$) are summed
    plainly. One pass per $j$ over arrays of the shape of `start` (a loop, so nothing of size
    $m \times$ `shape` is formed besides `A`), for the first `count` rows only (a traced bound;
    default all $m$). The exact products leave nothing for a fused multiply-add to change.
    """
    A_hi, A_lo = split(A)
    b_hi, b_lo_part = split(b)
    small = jnp.zeros_like(b) if b_lo is None else b_lo
    zero = jnp.zeros_like(start)

    def add(j, carry):
        s, t, c, mag = carry
        s, e1 = two_sum(s, A_hi[j] * b_hi[j])
        t, e2 = two_sum(t, A_hi[j] * b_lo_part[j])
        t, e3 = two_sum(t, A_lo[j] * b_hi[j])
        last = A_lo[j] * b_lo_part[j]
        tail = A[j] * small[j]  # rounded: u |tail|, counted with the plain sum's terms
        c = c + ((e1 + e2) + (e3 + last) + tail)
        mag = mag + ((jnp.abs(e1) + jnp.abs(e2)) + (jnp.abs(e3) + jnp.abs(last)) + jnp.abs(tail))
        return s, t, c, mag

    m = A.shape[0]
    s, t, c, mag = jax.lax.fori_loop(
        0, m if count is None else count, add, (start, zero, zero, zero)
    )
    hi, e = two_sum(s, t)
    lo = c + e
    g = gamma(5 * m + 2, start.dtype)
    # underflowing products (flushed to zero on some backends) add at most 2^-125 each
    tiny = jnp.asarray(5 * m * 2.0**-125, start.dtype)
    return hi, lo, (g * (mag + jnp.abs(c) + jnp.abs(e)) + tiny) * (1.0 + g) ** 2
