"""Test configuration, set once for the whole suite.

- float64 everywhere (float32 tests ask for it explicitly);
- strict rank promotion: an implicit broadcast of arrays of different ranks raises, so the
  package broadcasts explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
