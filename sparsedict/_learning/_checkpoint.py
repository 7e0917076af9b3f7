"""Checkpoints that know which run they belong to, written atomically and verified on load.

A checkpoint holds the learner state, the history, the step count and `run`: a JSON record of
what defines the run (learner and options, k or widths, lam, seeds, data fingerprint, ...).
Resuming with a different record raises `RunMismatch` naming the fields that differ; a file that
cannot be read back whole (truncated, corrupted: the zip CRCs are checked on read, wrong
shapes) is reported with a warning and the run starts again.
"""

import json
import os
import warnings
import zipfile

import jax
import numpy as np

from ._metrics import StepInfo


class RunMismatch(ValueError):
    """A checkpoint or results folder belongs to a different run than the one asked for."""


def describe_difference(found: dict, asked: dict) -> str:
    """`key: found -> asked` for every field that differs (nested dicts flattened)."""

    def flat(d, prefix=""):
        out = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    a, b = flat(found), flat(asked)
    keys = sorted(set(a) | set(b))
    return "; ".join(
        f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}"
        for key in keys
        if a.get(key, "(absent)") != b.get(key, "(absent)")
    )


def check_same_run(found: dict, asked: dict, where: str, remedy: str):
    found, asked = json.loads(json.dumps(found)), json.loads(json.dumps(asked))
    if found != asked:
        raise RunMismatch(
            f"{where} belongs to a different run ({describe_difference(found, asked)}); {remedy}"
        )


def atomic_savez(path: str, **arrays):
    """`np.savez` to a temporary file, then `os.replace`: readers see the old file or the new."""
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_npz(path: str) -> dict | None:
    """Every array of an `.npz` file, read whole (CRCs checked); None (warned) if damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        warnings.warn(
            f"{path} is damaged ({type(error).__name__}: {error}); it is ignored and its "
            "content computed again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def save(path, state, history, steps, run: dict):
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"state_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update(
        {f"history_{name}": np.asarray(getattr(history, name)) for name in StepInfo._fields}
    )
    arrays["steps"] = np.asarray(steps)
    arrays["run"] = np.array(json.dumps(run, sort_keys=True))
    atomic_savez(path, **arrays)


def load(path, like_state, run: dict):
    """`(state, history, steps)` from `path`, or None if it is missing or damaged.

    Raises `RunMismatch` if the checkpoint is of another run.
    """
    if not os.path.exists(path):
        return None
    data = read_npz(path)
    if data is None:
        return None
    if "run" not in data:
        raise RunMismatch(
            f"checkpoint {path} does not record which run it belongs to (written by an older "
            "sparsedict); delete it or pass another checkpoint path"
        )
    check_same_run(
        json.loads(str(data["run"])),
        run,
        f"checkpoint {path}",
        "delete it or pass another checkpoint path",
    )
    treedef = jax.tree_util.tree_structure(like_state)
    like = jax.tree_util.tree_leaves(like_state)
    try:
        leaves = [data[f"state_{i}"] for i in range(len(like))]
        history = StepInfo(*(data[f"history_{name}"] for name in StepInfo._fields))
        steps = int(data["steps"])
        bad = [i for i, (v, x) in enumerate(zip(leaves, like, strict=True)) if v.shape != x.shape]
        lengths = {len(h) for h in history}
        if bad or len(lengths) != 1 or f"state_{len(like)}" in data:
            raise ValueError("its arrays do not have the shapes of this run's state")
    except (KeyError, ValueError) as error:
        warnings.warn(
            f"checkpoint {path} is damaged ({error}); the run starts again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    leaves = [jax.numpy.asarray(v, dtype=x.dtype) for v, x in zip(leaves, like, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves), history, steps
