r"""A deterministic shuffled minibatch stream with memory O(n / block_rows), not O(n).

The stream is the concatenation of epochs, each a permutation of the n rows. Epoch $e$ cuts the
rows into $\lceil n/B \rceil$ blocks of $B$ = `block_rows` contiguous rows, permutes the blocks
(generator seeded by `(seed, e, 0)`), cuts that block order into groups of `window` blocks, and
permutes the rows inside group $g$ (generator `(seed, e, 1 + g)`). Minibatch $s$ holds stream
positions $[sb, (s+1)b)$, so it depends on `(seed, s)` alone: a run resumed at any step reads
the same rows, and every row is read exactly once per epoch (a minibatch may straddle two
epochs). Rows that are far apart in the file meet in a minibatch only through the block order:
raise `window` for data whose order is correlated (activations of consecutive tokens).
"""

import equinox as eqx
import numpy as np

from .._validation import finite_rows, int_at_least
from ._sources import SignalSource


class Shuffle(eqx.Module):
    """Block shuffle: permute blocks of `block_rows` rows, then rows within `window` blocks.

    With n <= block_rows * window every epoch is a uniform random permutation of the rows.
    Memory: the block order (n / block_rows integers) and one group's row order
    (block_rows * window integers).
    """

    block_rows: int = eqx.field(static=True, default=4096)
    window: int = eqx.field(static=True, default=16)

    def __check_init__(self):
        for name in ("block_rows", "window"):
            int_at_least(getattr(self, name), f"Shuffle.{name}")

    def _plan(self, n, seed, epoch):
        """The epoch's block order and the stream offsets where its groups start."""
        B, blocks = self.block_rows, -(-n // self.block_rows)
        order = np.random.default_rng([seed, epoch, 0]).permutation(blocks)
        sizes = np.minimum(B, n - order * B)
        starts = np.concatenate(
            [[0], np.cumsum(np.add.reduceat(sizes, np.arange(0, blocks, self.window)))]
        )
        return order, starts

    def _group(self, n, seed, epoch, order, g):
        B = self.block_rows
        rows = np.concatenate(
            [
                np.arange(b * B, min(n, (b + 1) * B))
                for b in order[g * self.window : (g + 1) * self.window]
            ]
        )
        return rows[np.random.default_rng([seed, epoch, 1 + g]).permutation(rows.size)]

    def rows(self, n: int, seed: int, start: int, stop: int) -> np.ndarray:
        """Row indices at stream positions `start:stop` (position p is in epoch p // n)."""
        out = np.empty(stop - start, np.int64)
        pos = start
        plan: tuple = (None, None)
        group: tuple = (None, None)
        while pos < stop:
            epoch, offset = divmod(pos, n)
            if plan[0] != epoch:
                plan = (epoch, self._plan(n, seed, epoch))
            order, starts = plan[1]
            g = int(np.searchsorted(starts, offset, side="right")) - 1
            if group[0] != (epoch, g):
                group = ((epoch, g), self._group(n, seed, epoch, order, g))
            take = min(stop - pos, int(starts[g + 1]) - offset)
            first = offset - int(starts[g])
            out[pos - start : pos - start + take] = group[1][first : first + take]
            pos += take
        return out


class Minibatches:
    """The deterministic minibatch stream of a source: step s reads stream positions [s b, (s+1) b).

    `batches(step, count)` returns the same (count, batch_size, d) array for a given
    `(seed, step)` however the run got there. Rows are checked on the host as they are read:
    NaN or inf raises a `ValueError` naming the source and the rows.
    """

    def __init__(
        self,
        source: SignalSource,
        batch_size: int,
        seed: int = 0,
        *,
        shuffle: Shuffle | None = None,
        dtype=None,
    ):
        batch_size = int_at_least(batch_size, "batch_size")
        seed = int_at_least(seed, "seed (of a streamed shuffle)", 0)
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.shuffle = Shuffle() if shuffle is None else shuffle
        self.dtype = source.dtype if dtype is None else np.dtype(dtype)

    def rows(self, step: int, count: int) -> np.ndarray:
        """Row indices of minibatches `step, ..., step + count - 1`, shape (count, batch_size)."""
        b = self.batch_size
        return self.shuffle.rows(self.source.n, self.seed, step * b, (step + count) * b).reshape(
            count, b
        )

    def batches(self, step: int, count: int) -> np.ndarray:
        """Minibatches `step, ..., step + count - 1` as a host array (count, batch_size, d)."""
        rows = self.rows(step, count)
        values = self.source.take(rows.reshape(-1))
        finite_rows(values, rows, self.source.name, f"minibatches {step} to {step + count - 1}")
        return values.astype(self.dtype, copy=False).reshape(count, self.batch_size, self.source.d)
