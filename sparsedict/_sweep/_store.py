"""The results folder of a sweep: incremental, resumable, safe.

    manifest.json          the spec, the data's fingerprint, the member grouping, versions
    results.csv            one row per finished member (rewritten whole after each bucket)
    bucket_<W>.npz         rows, dictionaries (members, W, d), per-atom stationarity residuals
                           (members, W; NaN on padding), widths, seeds, lams of bucket W
    bucket_<W>.g<j>.state.npz   checkpoint of group j of an unfinished bucket
    bucket_<W>.g<j>.npz    a finished group of a bucket split to fit in memory
                           (both removed when the bucket finishes)

Every file is written to a temporary file and renamed (atomic): a crash leaves the old version
or the new one, never half of one. The bucket files are the record of what finished: on resume
each is read back whole (zip CRCs checked) and checked to hold its bucket's members; a damaged one
is reported with a warning and its bucket computed again, and `results.csv` is rebuilt from the
bucket files. A folder holding another run (other spec, other data, or another member grouping
for a bucket with unfinished groups) is refused with `RunMismatch` naming what differs.
"""

import csv
import io
import json
import os
import platform
import re
import warnings

import jax
import numpy as np

from .._learning._checkpoint import (
    RunMismatch,
    atomic_savez,
    atomic_write_text,
    check_same_run,
    describe_difference,
    read_npz,
)

COLUMNS = [
    "width",
    "seed",
    "lam",
    "objective",
    "bound",
    "gap_to_bound",
    "mean_l0",
    "dead_atoms",
    "explained_variance",
    "stationarity",
    "max_relative_constraint",
    "max_block_ratio",
    "free_atom_ratio",
    "max_relative_gap",
    "steps",
    "status",
]

_BUCKET = re.compile(r"bucket_(\d+)\.npz$")
_REMEDY = "use another --out folder (out=) or delete it"


def _members(rows):
    return [(int(r["width"]), int(r["seed"]), float(r["lam"])) for r in rows]


def _same_members(rows, members) -> bool:
    want = [(int(w), int(s), float(lam)) for w, s, lam in members]
    return len(rows) == len(want) and all(
        a[:2] == b[:2] and np.isclose(a[2], b[2]) for a, b in zip(_members(rows), want, strict=True)
    )


class ResultStore:
    """A sweep's results folder. `data` (the data's fingerprint) and `grouping` (`{W: members
    per group}` of the memory plan) are checked against a folder being resumed; pass None to
    read a folder without checks."""

    def __init__(self, folder, spec, write=True, data=None, grouping=None):
        self.folder, self.write, self.spec = folder, write, spec
        if write:
            os.makedirs(folder, exist_ok=True)
        self.manifest_path = os.path.join(folder, "manifest.json")
        self._buckets: dict = {}
        if os.path.exists(self.manifest_path):
            with open(self.manifest_path) as f:
                self.manifest = json.load(f)
            where = f"{folder} (a sweep results folder)"
            if self.manifest["spec"] != spec.to_json():
                raise RunMismatch(
                    f"{where} holds a sweep with a different spec "
                    f"({describe_difference(self.manifest['spec'], spec.to_json())}); {_REMEDY}"
                )
            if data is not None:
                check_same_run({"data": self.manifest.get("data")}, {"data": data}, where, _REMEDY)
        else:
            import sparsedict

            self.manifest = {
                "spec": spec.to_json(),
                "data": data,
                "grouping": {},
                "versions": {
                    "sparsedict": sparsedict.__version__,
                    "jax": jax.__version__,
                    "numpy": np.__version__,
                    "python": platform.python_version(),
                },
                "devices": [str(d) for d in jax.devices()],
                "finished_buckets": [],
            }
        if grouping is not None:
            self._check_grouping(grouping)
        self._write_manifest()

    def _check_grouping(self, grouping):
        """Refuse another member grouping for a bucket whose groups are partly done."""
        recorded = self.manifest.setdefault("grouping", {})
        for W, size in grouping.items():
            old = recorded.get(str(W))
            started = any(
                name.startswith(f"bucket_{W}.g") for name in _listdir(self.folder)
            ) and not self.finished(W)
            if old is not None and old != size and started:
                raise RunMismatch(
                    f"{self.folder}: bucket W={W} was being trained in groups of {old} members "
                    f"and this run would use groups of {size} (the memory budget or member batch "
                    "changed): rerun with the same --memory-budget/--member-batch, or "
                    f"{_REMEDY}"
                )
            recorded[str(W)] = int(size)

    def _write_manifest(self):
        if not self.write:
            return
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2))

    def _bucket_path(self, bucket):
        return os.path.join(self.folder, f"bucket_{int(bucket)}.npz")

    def load_bucket(self, bucket, members=None):
        """`(rows, dictionaries, per_atom)` of a finished bucket, read back and verified; None if
        the bucket did not finish or its file is damaged (warned) or holds other members."""
        bucket = int(bucket)
        if bucket not in self._buckets:
            found = _read_members(
                self._bucket_path(bucket), members, f"bucket W={bucket}", width=bucket
            )
            if found is None:
                return None
            self._buckets[bucket] = found
        return self._buckets[bucket]

    def finished(self, bucket, members=None):
        return self.load_bucket(bucket, members) is not None

    def state_path(self, bucket, group=0):
        return os.path.join(self.folder, f"bucket_{bucket}.g{group}.state.npz")

    def _group_path(self, bucket, group):
        return os.path.join(self.folder, f"bucket_{bucket}.g{group}.npz")

    def save_group(self, bucket, group, rows, dictionaries, atom_relative_constraint):
        """A finished group of members of a bucket that runs in several groups."""
        if not self.write:
            return
        atomic_savez(
            self._group_path(bucket, group),
            dictionaries=dictionaries,
            atom_relative_constraint=atom_relative_constraint,
            rows=np.array(json.dumps(rows)),
        )
        if os.path.exists(self.state_path(bucket, group)):
            os.remove(self.state_path(bucket, group))

    def load_group(self, bucket, group, members=None):
        return _read_members(
            self._group_path(bucket, group), members, f"group {group} of bucket W={bucket}"
        )

    def save_bucket(self, bucket, rows, dictionaries, atom_relative_constraint):
        bucket = int(bucket)
        self._buckets[bucket] = (rows, dictionaries, atom_relative_constraint)
        if bucket not in self.manifest["finished_buckets"]:
            self.manifest["finished_buckets"].append(bucket)
        if not self.write:
            return
        columns = {c: np.array([r[c] for r in rows]) for c in ("width", "seed", "lam")}
        atomic_savez(
            self._bucket_path(bucket),
            dictionaries=dictionaries,
            atom_relative_constraint=atom_relative_constraint,
            rows=np.array(json.dumps(rows)),
            **columns,
        )
        self._write_manifest()
        self.write_table()
        prefix = f"bucket_{bucket}.g"
        for name in _listdir(self.folder):  # group results and checkpoints are now in the bucket
            if name.startswith(prefix):
                os.remove(os.path.join(self.folder, name))

    def write_table(self):
        """`results.csv` rebuilt whole from the finished buckets (atomic)."""
        if not self.write:
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows())
        atomic_write_text(os.path.join(self.folder, "results.csv"), text.getvalue())

    def _finished_buckets(self):
        found = sorted(
            int(m.group(1)) for m in map(_BUCKET.match, _listdir(self.folder)) if m is not None
        )
        return [b for b in found if self.load_bucket(b) is not None]

    def per_atom(self):
        """[(width, seed, lam, per-atom relative constraint residuals)] of the finished members."""
        out = []
        for bucket in self._finished_buckets():
            rows, _, per_atom = self.load_bucket(bucket)
            for row, residuals in zip(rows, per_atom, strict=True):
                w = int(row["width"])
                out.append((w, int(row["seed"]), float(row["lam"]), residuals[:w]))
        return out

    def rows(self):
        """The rows of every finished member, sorted by (lam, width, seed)."""
        rows = [r for b in self._finished_buckets() for r in self.load_bucket(b)[0]]
        return sorted(rows, key=lambda r: (r["lam"], r["width"], r["seed"]))

    def dictionary(self, width, seed, lam):
        """The learned dictionary (width, d) of one member."""
        for bucket in self._finished_buckets():
            rows, D, _ = self.load_bucket(bucket)
            for i, (w, s, lam_i) in enumerate(_members(rows)):
                if w == width and s == seed and np.isclose(lam_i, lam):
                    return D[i][:width]
        raise KeyError(f"no finished member with width={width}, seed={seed}, lam={lam}")


def _listdir(folder):
    return os.listdir(folder) if os.path.isdir(folder) else []


def _read_members(path, members, what, width=None):
    """`(rows, dictionaries, per_atom)` read back from a bucket or group file and verified (the
    arrays match the rows, of `width` atoms when given; the rows are `members` when given);
    None if the file is missing, or damaged or stale (warned: `what` is computed again)."""
    if not os.path.exists(path):
        return None
    content = read_npz(path)
    if content is None:
        return None
    try:
        rows = json.loads(str(content["rows"]))
        D, per_atom = content["dictionaries"], content["atom_relative_constraint"]
        if width is not None and (
            D.shape[:2] != (len(rows), width) or per_atom.shape != (len(rows), width)
        ):
            raise ValueError("arrays and rows do not match")
        if members is not None and not _same_members(rows, members):
            raise ValueError(f"it holds other members than this sweep's {what}")
    except (KeyError, ValueError, TypeError) as error:
        warnings.warn(
            f"{path} is damaged or stale ({error}); {what} is computed again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return rows, D, per_atom
