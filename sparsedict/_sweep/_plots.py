"""Sweep figures (matplotlib, an optional dependency: `pip install "sparsedict[plot]"`)."""

import os

import numpy as np


def _mean_by_width(rows, lam, key):
    widths = sorted({int(r["width"]) for r in rows if r["lam"] == lam})
    return widths, [
        np.mean([r[key] for r in rows if r["lam"] == lam and r["width"] == w]) for w in widths
    ]


def write_plots(rows, per_atom, folder):
    """Objective and bound, L0 and dead fraction against width, and per-atom stationarity.

    Returns the paths written (empty when matplotlib is not installed).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    lams = sorted({r["lam"] for r in rows})
    all_widths = sorted({int(r["width"]) for r in rows})
    paths = []

    def width_axis(ax):
        ax.set_xscale("log")
        ax.set_xticks(all_widths, [str(w) for w in all_widths])
        ax.minorticks_off()

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for lam in lams:
        widths, objective = _mean_by_width(rows, lam, "objective")
        _, bound = _mean_by_width(rows, lam, "bound")
        (line,) = ax.plot(widths, objective, "o-", label=f"objective, lam={lam:g}")
        ax.plot(widths, bound, "--", color=line.get_color(), label=f"wide-limit bound, lam={lam:g}")
    width_axis(ax)
    ax.set(
        xlabel="width (atoms)",
        ylabel="F = mean 1/2|x - aD|^2 + lam|a|_1",
        title="Objective against width",
    )
    ax.legend(fontsize=8)
    paths.append(os.path.join(folder, "objective_vs_width.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for lam in lams:
        widths, l0 = _mean_by_width(rows, lam, "mean_l0")
        _, dead = _mean_by_width(rows, lam, "dead_atoms")
        ax1.plot(widths, l0, "o-", label=f"lam={lam:g}")
        ax2.plot(widths, np.array(dead) / np.array(widths), "o-", label=f"lam={lam:g}")
    width_axis(ax1)
    width_axis(ax2)
    ax1.set(xlabel="width", ylabel="mean L0", title="Active atoms per signal")
    ax2.set(xlabel="width", ylabel="dead fraction", title="Dead atoms")
    ax2.set_ylim(0, max(0.05, ax2.get_ylim()[1]))
    ax1.legend(fontsize=8)
    paths.append(os.path.join(folder, "l0_dead_vs_width.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for width, seed, lam, residual in per_atom:
        if seed != min(p[1] for p in per_atom) or lam != lams[0]:
            continue
        values = np.sort(np.maximum(residual[np.isfinite(residual)], 1e-17))[::-1]
        ax.plot(np.arange(1, len(values) + 1) / len(values), values, label=f"k={width}")
    ax.set(
        yscale="log",
        xlabel="atom rank / width",
        ylabel="|s_k/m_k - lam d_k| / lam",
        title=f"Per-atom stationarity residual (lam={lams[0]:g})",
    )
    ax.legend(fontsize=8)
    paths.append(os.path.join(folder, "atom_stationarity.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
