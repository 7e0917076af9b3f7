"""The results folder of a sweep: incremental, resumable.

    manifest.json          the spec, package versions, finished buckets
    results.csv            one row per finished member
    bucket_<W>.npz         dictionaries (members, W, d), per-atom stationarity residuals
                           (members, W; NaN on padding), widths, seeds, lams of bucket W
    bucket_<W>.state.npz   checkpoint of an unfinished bucket (removed when it finishes)

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
    "width", "seed", "lam", "objective", "bound", "gap_to_bound", "mean_l0", "dead_atoms",
    "explained_variance", "max_relative_constraint", "max_block_ratio", "free_atom_ratio",
    "max_relative_gap", "steps",
]


class ResultStore:
    def __init__(self, folder, spec):
        self.folder = folder
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
                "versions": {"sparsedict": sparsedict.__version__, "jax": jax.__version__,
                             "numpy": np.__version__, "python": platform.python_version()},
                "devices": [str(d) for d in jax.devices()],
                "finished_buckets": [],
            }
            self._write_manifest()

    def _write_manifest(self):
        tmp = self.manifest_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.manifest, f, indent=2)
        os.replace(tmp, self.manifest_path)

    def finished(self, bucket):
        return int(bucket) in self.manifest["finished_buckets"]

    def state_path(self, bucket):
        return os.path.join(self.folder, f"bucket_{bucket}.state.npz")

    def save_bucket(self, bucket, rows, dictionaries, atom_relative_constraint):
        path = os.path.join(self.folder, f"bucket_{bucket}.npz")
        tmp = path + ".tmp.npz"
        columns = {c: np.array([r[c] for r in rows]) for c in ("width", "seed", "lam")}
        np.savez(tmp, dictionaries=dictionaries, atom_relative_constraint=atom_relative_constraint, **columns)
        os.replace(tmp, path)
        table = os.path.join(self.folder, "results.csv")
        new = not os.path.exists(table)
        with open(table, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
        self.manifest["finished_buckets"].append(int(bucket))
        self._write_manifest()
        if os.path.exists(self.state_path(bucket)):
            os.remove(self.state_path(bucket))

    def per_atom(self):
        """[(width, seed, lam, per-atom relative constraint residuals)] of the finished members."""
        out = []
        for bucket in sorted(self.manifest["finished_buckets"]):
            with np.load(os.path.join(self.folder, f"bucket_{bucket}.npz")) as data:
                for i, w in enumerate(data["width"]):
                    out.append((int(w), int(data["seed"][i]), float(data["lam"][i]),
                                data["atom_relative_constraint"][i][: int(w)]))
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
                hit = (data["width"] == width) & (data["seed"] == seed) & np.isclose(data["lam"], lam)
                if hit.any():
                    return data["dictionaries"][int(np.argmax(hit))][:width]
        raise KeyError(f"no finished member with width={width}, seed={seed}, lam={lam}")
