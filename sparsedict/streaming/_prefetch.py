"""Prefetch: read and `device_put` the next chunks of minibatches while the current one runs.

One background thread walks the chunks `step, step + count, ...` in order and puts them on the
device into a bounded queue (`depth` chunks ahead), so reading overlaps the compiled training
chunk. Asking for a step other than the next one (the first call, a resume) restarts the thread
there; the chunks are those of `Minibatches.batches`, so the order never depends on timing.
Errors raised while reading are raised again by the call that asks for that chunk.
"""

import dataclasses
import queue
import threading
from typing import Any

import jax

from .._validation import int_at_least
from ._order import Minibatches


@dataclasses.dataclass(eq=False)
class Prefetcher:
    """`prefetcher(step)` returns `minibatches.batches(step, count)` on the device, read ahead.

    Arguments:
        minibatches: the stream to read.
        count: minibatches per chunk (the learner's `chunk_size`).
        depth: chunks read ahead (memory: up to depth + 1 chunks on the host or device besides
            the one in use); 0 reads each chunk when asked, without a thread.
        stop: read no chunk starting at or after this step (the run's `max_steps`).
        device: where to put the chunks (default: JAX's default device).

    Use it as a context manager, or call `close()`, to stop the thread.
    """

    minibatches: Minibatches
    count: int
    _: dataclasses.KW_ONLY
    depth: int = 2
    stop: int | None = None
    device: Any = None
    # the reader thread and its queue, and the step of the chunk it reads next
    _thread: threading.Thread | None = dataclasses.field(default=None, init=False, repr=False)
    _next: int | None = dataclasses.field(default=None, init=False, repr=False)
    _halt: threading.Event = dataclasses.field(
        default_factory=threading.Event, init=False, repr=False
    )
    _queue: queue.Queue | None = dataclasses.field(default=None, init=False, repr=False)

    def __post_init__(self):
        int_at_least(self.depth, "prefetch depth", 0)

    def _read(self, step):
        return jax.device_put(self.minibatches.batches(step, self.count), self.device)

    def _put(self, item):
        while not self._halt.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _work(self, step):
        try:
            while not self._halt.is_set() and (self.stop is None or step < self.stop):
                if not self._put((step, self._read(step), None)):
                    return
                step += self.count
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((step, None, error))

    def _start(self, step):
        self.close()
        self._halt, self._queue = threading.Event(), queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(
            target=self._work, args=(step,), daemon=True, name="sparsedict-prefetch"
        )
        self._thread.start()
        self._next = step

    def __call__(self, step: int) -> jax.Array:
        """The chunk of minibatches `step, ..., step + count - 1`, shape (count, batch, d)."""
        if self.depth == 0 or (self.stop is not None and step >= self.stop):
            return self._read(step)
        if self._thread is None or step != self._next:
            self._start(step)
        while True:
            try:
                got, chunk, error = self._queue.get(timeout=0.05)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()  # the thread stopped without this chunk
                    return self._read(step)
        if error is not None:
            self.close()
            raise error
        assert got == step, (got, step)
        self._next = step + self.count
        return chunk

    def close(self):
        """Stop the thread and drop the chunks read ahead."""
        if self._thread is None:
            return
        self._halt.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()
        self._thread, self._next, self._queue = None, None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
