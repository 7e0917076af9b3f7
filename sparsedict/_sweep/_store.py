"""The results folder of a sweep: incremental, resumable.

    manifest.json          the spec, package versions, finished buckets
    results.csv            one row per finished member
    bucket_<W>.npz         dictionaries (members, W, d), per-atom stationarity residuals
                           (members, W; NaN on padding), widths, seeds, lams of bucket W
    bucket_<W>.g<j>.state.npz   checkpoint of group j of an unfinished bucket
    bucket_<W>.g<j>.npz    a finished group of a bucket split to fit in memory
                           (both removed when the bucket finishes)

A bucket is written atomically when it finishes; an interrupted sweep resumes from the finished
buckets and from the last chunk of the bucket in progress.
"""

import csv
import json
import os
import platform

import jax
import numpy as np

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
    "max_relative_constraint",
    "max_block_ratio",
    "free_atom_ratio",
    "max_relative_gap",
    "steps",
]


class ResultStore:
    def __init__(self, folder, spec, write=True):
        self.folder, self.write = folder, write
        if write:
            os.makedirs(folder, exist_ok=True)
        self.manifest_path = os.path.join(folder, "manifest.json")
        if os.path.exists(self.manifest_path):
            with open(self.manifest_path) as f:
                self.manifest = json.load(f)
            if self.manifest["spec"] != spec.to_json():
                raise ValueError(
                    f"{folder} holds a sweep with a different spec; use another --out folder "
                    f"or delete it (found {self.manifest['spec']}, asked for {spec.to_json()})"
                )
        else:
            import sparsedict

            self.manifest = {
                "spec": spec.to_json(),
                "versions": {
                    "sparsedict": sparsedict.__version__,
                    "jax": jax.__version__,
                    "numpy": np.__version__,
                    "python": platform.python_version(),
                },
                "devices": [str(d) for d in jax.devices()],
                "finished_buckets": [],
            }
            self._write_manifest()

    def _write_manifest(self):
        if not self.write:
            return
        tmp = self.manifest_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.manifest, f, indent=2)
        os.replace(tmp, self.manifest_path)

    def finished(self, bucket):
        return int(bucket) in self.manifest["finished_buckets"]

    def state_path(self, bucket, group=0):
        return os.path.join(self.folder, f"bucket_{bucket}.g{group}.state.npz")

    def _group_path(self, bucket, group):
        return os.path.join(self.folder, f"bucket_{bucket}.g{group}.npz")

    def save_group(self, bucket, group, rows, dictionaries, atom_relative_constraint):
        """A finished group of members of a bucket that runs in several groups."""
        if not self.write:
            return
        path = self._group_path(bucket, group)
        tmp = path + ".tmp.npz"
        np.savez(
            tmp,
            dictionaries=dictionaries,
            atom_relative_constraint=atom_relative_constraint,
            rows=np.array(json.dumps(rows)),
        )
        os.replace(tmp, path)
        if os.path.exists(self.state_path(bucket, group)):
            os.remove(self.state_path(bucket, group))

    def load_group(self, bucket, group):
        path = self._group_path(bucket, group)
        if not os.path.exists(path):
            return None
        with np.load(path) as data:
            return (
                json.loads(str(data["rows"])),
                data["dictionaries"],
                data["atom_relative_constraint"],
            )

    def save_bucket(self, bucket, rows, dictionaries, atom_relative_constraint):
        self.manifest["finished_buckets"].append(int(bucket))
        if not self.write:
            return
        path = os.path.join(self.folder, f"bucket_{bucket}.npz")
        tmp = path + ".tmp.npz"
        columns = {c: np.array([r[c] for r in rows]) for c in ("width", "seed", "lam")}
        np.savez(
            tmp,
            dictionaries=dictionaries,
            atom_relative_constraint=atom_relative_constraint,
            **columns,
        )
        os.replace(tmp, path)
        table = os.path.join(self.folder, "results.csv")
        new = not os.path.exists(table)
        with open(table, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        self._write_manifest()
        prefix = f"bucket_{bucket}.g"
        for name in os.listdir(self.folder):  # group results and checkpoints are now in the bucket
            if name.startswith(prefix):
                os.remove(os.path.join(self.folder, name))

    def per_atom(self):
        """[(width, seed, lam, per-atom relative constraint residuals)] of the finished members."""
        out = []
        for bucket in sorted(self.manifest["finished_buckets"]):
            with np.load(os.path.join(self.folder, f"bucket_{bucket}.npz")) as data:
                for i, w in enumerate(data["width"]):
                    out.append(
                        (
                            int(w),
                            int(data["seed"][i]),
                            float(data["lam"][i]),
                            data["atom_relative_constraint"][i][: int(w)],
                        )
                    )
        return out

    def rows(self):
        table = os.path.join(self.folder, "results.csv")
        if not os.path.exists(table):
            return []
        with open(table) as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def dictionary(self, width, seed, lam):
        """The learned dictionary (width, d) of one member."""
        for bucket in self.manifest["finished_buckets"]:
            with np.load(os.path.join(self.folder, f"bucket_{bucket}.npz")) as data:
                hit = (
                    (data["width"] == width) & (data["seed"] == seed) & np.isclose(data["lam"], lam)
                )
                if hit.any():
                    return data["dictionaries"][int(np.argmax(hit))][:width]
        raise KeyError(f"no finished member with width={width}, seed={seed}, lam={lam}")
