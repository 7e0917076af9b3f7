"""Streaming input: train on signals that do not fit in memory.

- [`open_signals`][sparsedict.streaming.open_signals] gives a
  [`SignalSource`][sparsedict.streaming.SignalSource] for an in-memory array, a `.npy` file, or
  `.npz`/`.safetensors` shards (one array each, rows concatenated). Files are read with explicit
  reads at the array's byte offset, so the resident memory is the rows read, not the file.
- [`Minibatches`][sparsedict.streaming.Minibatches] is the deterministic shuffled minibatch
  stream ([`Shuffle`][sparsedict.streaming.Shuffle]: blocks of rows permuted per epoch, rows
  permuted within a window of blocks; memory O(n / block_rows)). Minibatch `s` depends on
  `(seed, s)` alone, so a resumed run sees the same data; rows are checked for NaN/inf as read.
- [`Prefetcher`][sparsedict.streaming.Prefetcher] reads and `device_put`s the next chunks in a
  background thread while the current compiled chunk runs.
- [`load_array`][sparsedict.streaming.load_array] reads a whole file with the same reader (the
  CLI's `--data` and `--dictionary`).

`learn_dictionary(method="online")` and `train_sae` accept a path, a list of shards or a source
as `X` and use all three.
"""

from ._order import Minibatches, Shuffle
from ._prefetch import Prefetcher
from ._sources import ArraySource, FileSource, SignalSource, load_array, open_signals

__all__ = [
    "ArraySource",
    "FileSource",
    "Minibatches",
    "Prefetcher",
    "Shuffle",
    "SignalSource",
    "load_array",
    "open_signals",
]
