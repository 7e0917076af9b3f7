"""`largest` / `largest_indices` against `jax.lax.top_k` and numpy, with ties and infinities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsedict._coding._select import largest, largest_indices


def _draws(rng, k):
    """Random rows of every kind the users pass: distinct, tied, with +-inf, with negatives."""
    distinct = rng.standard_normal(k)
    tied = rng.integers(-3, 3, k).astype(float)
    infinite = np.where(rng.random(k) < 0.3, np.inf, rng.standard_normal(k))
    infinite = np.where(rng.random(k) < 0.3, -np.inf, infinite)
    tiny = rng.standard_normal(k) * 1e-30
    return [distinct, tied, infinite, tiny, -np.abs(distinct), np.zeros(k)]


@pytest.mark.parametrize("k,m", [(1, 1), (7, 3), (64, 32), (300, 1), (300, 299), (4096, 64)])
def test_largest_selects_the_values_of_top_k(k, m):
    rng = np.random.default_rng(k * 1000 + m)
    for values in _draws(rng, k):
        for dtype in (jnp.float32, jnp.float64):
            v = jnp.asarray(values, dtype)
            mask = np.asarray(largest(v, m))
            assert mask.sum() == min(m, k)
            # the selected values are the m largest (as a multiset): compare with numpy's sort
            expected = np.sort(np.asarray(v.astype(jnp.float32)))[::-1][:m]
            chosen = np.sort(np.asarray(v.astype(jnp.float32))[mask])[::-1]
            np.testing.assert_array_equal(chosen, expected)
            top, _ = jax.lax.top_k(v.astype(jnp.float32), min(m, k))
            np.testing.assert_array_equal(chosen, np.asarray(top))
            idx = np.asarray(largest_indices(v, min(m, k)))
            np.testing.assert_array_equal(idx, np.flatnonzero(mask))


def test_ties_are_taken_in_index_order_under_vmap():
    values = jnp.asarray([[1.0, 2.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    masks = jax.jit(jax.vmap(lambda v: largest(v, 2)))(values)
    np.testing.assert_array_equal(
        np.asarray(masks), [[False, True, True, False, False], [True, True, False, False, False]]
    )
