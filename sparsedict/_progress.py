"""Progress of long work: the `"sparsedict"` logger and an optional `progress` callback.

Long work (the learners and sweeps between compiled chunks, the chunked certificate, the
matrix-free block test) reports each unit done twice: as a record on the logger
`logging.getLogger("sparsedict")` (silent unless the application configures logging) and, when
the caller passes `progress=`, as a call `progress(Progress(...))`. Levels: `INFO` for stages (a
sweep bucket finished, a run resumed, tenths of a pass), `DEBUG` for every chunk.
"""

import contextlib
import logging
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

logger = logging.getLogger("sparsedict")
logger.addHandler(logging.NullHandler())  # a library logs; the application decides what shows


class Progress(NamedTuple):
    """One unit of long work done: `done` of `total` units of `task`, with a one-line `message`
    and numeric `metrics` (for example the objective and L0 of a training chunk).

    The `progress=` callbacks of `learn_dictionary`, `train_sae`, `run_sweep`,
    `optimality.certify_chunked` and `optimality.block_ratio_matrix_free` receive these. The same
    reports go to the logger `logging.getLogger("sparsedict")`: stages at INFO, every chunk at
    DEBUG. A tqdm bar: `progress=lambda p: bar.update(p.done - bar.n)`; Weights & Biases:
    `progress=lambda p: wandb.log(dict(p.metrics), step=p.done)`.
    """

    task: str
    done: int
    total: int
    message: str = ""
    metrics: Mapping[str, float] = MappingProxyType({})


ProgressCallback = Callable[[Progress], None]


def report(progress, task, done, total, message="", *, level=logging.DEBUG, **metrics):
    """Log `[task] done/total message` at `level` and call `progress` (if not None)."""
    logger.log(level, "[%s] %d/%d %s", task, done, total, message)
    if progress is not None:
        progress(Progress(task, int(done), int(total), message, MappingProxyType(metrics)))


def tenths(progress, task, *, level=logging.INFO):
    """A `(done, total)` reporter that logs at `level` each tenth of the way (every call at DEBUG)
    and passes every call to `progress`."""
    last = [-1]

    def update(done, total, message=""):
        tenth = 10 * done // max(total, 1)
        shown = level if tenth != last[0] or done == total else logging.DEBUG
        last[0] = tenth
        report(progress, task, done, total, message or f"({100 * done // max(total, 1)}%)",
               level=shown)  # fmt: skip

    return update


class _Stderr(logging.StreamHandler):
    """The handler `to_stderr` installs (one at a time: nested uses keep the outer one)."""


@contextlib.contextmanager
def to_stderr(level=logging.DEBUG):
    """Show the `"sparsedict"` records at `level` and above on stderr for the duration (what
    `verbose=True` and the command line use); inside another `to_stderr`, the outer one rules."""
    if any(isinstance(h, _Stderr) for h in logger.handlers):
        yield
        return
    handler = _Stderr(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level, previous) if previous else level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def verbosity(verbose):
    """`to_stderr()` when `verbose`, else nothing: the `verbose=` of the learners and sweeps."""
    return to_stderr() if verbose else contextlib.nullcontext()
