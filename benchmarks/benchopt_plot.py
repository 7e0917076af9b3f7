"""Curves of the benchopt nonnegative-lasso benchmark: extract, summary table and figure.

Reads benchopt's parquet outputs (or the CSV extracts this script writes) and, per dataset:
writes `<out>/<dataset>.csv` (solver, stop_val, time, max/median relative gap, mean primal),
prints a markdown table (time to a worst gap of 1e-6 and 1e-10, best worst gap, excess of the
mean primal over the lowest one any solver reached) and draws `<out>/<dataset>.png`: worst
relative gap against time, both logarithmic, one curve per solver (points in tolerance order).

    python benchmarks/benchopt_plot.py benchmarks/benchopt_nnlasso/outputs/P2.parquet \
        --out benchmarks/results/benchopt_nnlasso
    python benchmarks/benchopt_plot.py benchmarks/results/benchopt_nnlasso/P2.csv --no-csv
"""

import argparse
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

COLUMNS = {
    "solver_name": "solver",
    "stop_val": "stop_val",
    "time": "time",
    "objective_max_relative_gap": "max_relative_gap",
    "objective_median_relative_gap": "median_relative_gap",
    "objective_value": "mean_primal",
}
THRESHOLDS = (1e-6, 1e-10)


def load(path):
    """One dataset's curves as a frame with the extract's columns (and `dataset`)."""
    path = Path(path)
    if path.suffix == ".parquet":
        raw = pd.read_parquet(path)
        frame = raw[list(COLUMNS)].rename(columns=COLUMNS)
        frame.insert(0, "dataset", raw["dataset_name"].map(dataset_label))
        return frame
    return pd.read_csv(path)


def dataset_label(name):
    """`synthetic[problem=P2]` -> `P2`, `P3[n=4096]` -> `P3`, `SAE-like[n=4096]` -> `SAE-like`."""
    match = re.search(r"problem=(\w+)", name)
    return match.group(1) if match else name.split("[")[0]


def short(solver):
    return solver.replace("sparsedict[float64=True,solver=", "sparsedict ").rstrip("]")


def run_once(runs):
    """A `run_once` solver (SPAMS's LARS) has one point, with a finite stop_val."""
    return len(runs) == 1 and runs["stop_val"].iloc[0] < 1e30


def ladder_end(runs):
    """The smallest tolerance a solver was run with (benchopt's first call has tol = inf)."""
    if run_once(runs):
        return "one run"
    smallest = runs["stop_val"].min()
    return "only the first call" if smallest > 1e30 else f"{smallest:.0e}"


def table(frame):
    best_primal = frame["mean_primal"].min()
    lines = [
        "| solver | time to max gap <= 1e-6 (s) | time to max gap <= 1e-10 (s) | best max gap "
        "| mean primal excess (best point) | smallest tol run |",
        "|---|---|---|---|---|---|",
    ]
    for solver, runs in frame.groupby("solver", sort=True):
        cells = []
        for threshold in THRESHOLDS:
            reached = runs.loc[runs["max_relative_gap"] <= threshold, "time"]
            if len(reached):
                cells.append(f"{reached.min():.2f}")
            else:
                cells.append(f"not reached (runs up to {runs['time'].max():.0f} s)")
        excess = (runs["mean_primal"].min() - best_primal) / best_primal
        lines.append(
            f"| {short(solver)} | {cells[0]} | {cells[1]} | "
            f"{runs['max_relative_gap'].min():.1e} | {excess:.1e} | {ladder_end(runs)} |"
        )
    return "\n".join(lines)


def plot(frame, dataset, path):
    fig, ax = plt.subplots(figsize=(9, 4.8))
    styles = iter(zip("osD^v<>ph", plt.get_cmap("tab10").colors, strict=False))
    for solver, runs in frame.groupby("solver", sort=True):
        runs = runs.sort_values("stop_val", ascending=False)
        gap = np.maximum(runs["max_relative_gap"], 1e-16)  # a zero gap still shows on log axes
        if run_once(runs):  # one large marker
            ax.plot(runs["time"], gap, "k*", ms=14, label=short(solver))
            continue
        marker, color = next(styles)
        ax.plot(runs["time"], gap, marker=marker, color=color, ms=4, lw=1.2, label=short(solver))
    for threshold in THRESHOLDS:
        ax.axhline(threshold, color="0.6", lw=0.8, ls=":")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="wall time of the run (s)",
        ylabel="worst relative duality gap over the signals",
        title=f"benchopt nonnegative lasso, {dataset}: one point per run of the tolerance ladder",
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "inputs",
        nargs="+",
        help="benchopt .parquet outputs or extract .csv files; a solver's curve in a later file "
        "replaces its curve (same dataset) from the earlier ones",
    )
    parser.add_argument("--out", default="benchmarks/results/benchopt_nnlasso")
    parser.add_argument("--no-csv", action="store_true", help="do not (re)write the extracts")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.concat(
        [load(path).assign(source=i) for i, path in enumerate(args.inputs)], ignore_index=True
    )
    # A solver rerun in a later input replaces its curve from the earlier ones.
    last = frame.groupby(["dataset", "solver"])["source"].transform("max")
    frame = frame[frame["source"] == last].drop(columns="source")
    for dataset, runs in frame.groupby("dataset", sort=False):
        runs = runs.sort_values(["solver", "stop_val"], ascending=[True, False])
        if not args.no_csv:
            runs.to_csv(out / f"{dataset}.csv", index=False, float_format="%.17g")
        plot(runs, dataset, out / f"{dataset}.png")
        print(f"## {dataset}\n\n{table(runs)}\n")


if __name__ == "__main__":
    main()
