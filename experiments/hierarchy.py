"""Hierarchy and absorption (THEORY section 7): the child atom absorbs its parent.

Part 1, one parent and one child: `p = e1`, `c = e2` in R^3, `lam = 0.3`, `x = 2p` (70%) and
`x = 2p + 1.5c` (30%). The generating dictionary `[p, c]` is not stationary (2.2 residuals 0.09
and 0.30, F = 0.6765); alternating minimisation started there lands on the absorbed dictionary
`[p, (2p + 1.5c)/2.5]` with F = 0.6 = the Huber bound, and the parent never fires with the child.

Part 2, one parent with three exclusive children (each 20%, parent alone 40%, `x = 2p + 1.5c_j`),
widths 1..6: F - bound falls until width 4 = the number of distinct directions, where the bound is
reached (THEORY 3, global certificate); at width 3 the atoms are the child directions `p + c_j`
(the parent absorbed), at width 4 the parent returns as its own atom. THEORY lists F - bound =
0.502, 0.308, 0.122, 0.014, 0.011 for k = 1..5; its positive values at k = 4, 5 need noise
(without noise the bound is attained at k = 4), so a noisy variant is run too.
"""

import numpy as np

import sparsedict as sd
from sparsedict import optimality, wide_limit

from ._common import Experiment, best_by_width, plt, sweep, unit

LAM = 0.3
THEORY_GAPS = {1: 0.502, 2: 0.308, 3: 0.122, 4: 0.014, 5: 0.011}


def parent_child(n_per_10=1):
    p, c = np.eye(3)[0], np.eye(3)[1]
    X = np.array([2 * p] * (7 * n_per_10) + [2 * p + 1.5 * c] * (3 * n_per_10))
    return X, p, c


def one_parent_three_children(n=10, d=4, noise=0.0, seed=0):
    """Parent alone 40%, each child (with its parent) 20%: `x = 2p + 1.5c_j (+ noise)`."""
    E = np.eye(d)
    if noise == 0.0:
        labels = np.repeat(np.arange(4), [4 * n // 10, 2 * n // 10, 2 * n // 10, 2 * n // 10])
    else:
        labels = np.random.default_rng(seed).choice(4, size=n, p=[0.4, 0.2, 0.2, 0.2])
    X = 2 * E[0] + 1.5 * np.where(labels[:, None] > 0, E[np.maximum(labels, 1)], 0.0)
    X = X + noise * np.random.default_rng(seed + 1).standard_normal(X.shape)
    return X


def width_sweep(X, widths, seeds, steps):
    """{width: (best F - bound over seeds, its 2.2 residual, its dictionary)}."""
    rows, dictionaries = sweep(X, widths, seeds, LAM, steps)
    return {
        w: (r["gap_to_bound"], r["max_relative_constraint"], D)
        for w, (r, D) in best_by_width(rows, dictionaries, "gap_to_bound").items()
    }


def main(argv=None):
    exp = Experiment("hierarchy", argv, __doc__.splitlines()[0])

    # ---- part 1: one parent, one child --------------------------------------------------
    X, p, c = parent_child()
    D_gen = np.stack([p, c])
    report = optimality.certify(X, D_gen, LAM)
    bound = float(wide_limit.bound(X, LAM))
    learned = sd.learn_dictionary(X, 2, LAM, init=D_gen, max_steps=200, chunk_size=10)
    D_abs = np.stack([p, unit(2 * p + 1.5 * c)])
    D_learned = np.asarray(learned.dictionary)
    child_rows = X[:, 1] > 0
    parent_code_with_child = float(np.max(np.asarray(learned.codes)[child_rows, 0]))
    gen_res = np.asarray(report.atoms.constraint)
    exp.table(
        "One parent, one child (lam = 0.3)",
        ["dictionary", "F", "F - bound", "2.2 residual parent", "2.2 residual child"],
        [
            [
                "generating [p, c]",
                float(report.objective),
                float(report.objective) - bound,
                gen_res[0],
                gen_res[1],
            ],
            [
                "learned from generating",
                float(learned.objective),
                float(learned.objective) - bound,
                *np.asarray(learned.report.atoms.constraint),
            ],
        ],
        note=f"Huber bound {bound:.4f}; learned atoms {np.round(D_learned, 4).tolist()}; "
        f"largest parent code on points where the child fires: {parent_code_with_child:.1e}.",
    )
    exp.check(
        "generating-dictionary 2.2 residuals = (0.09, 0.30)",
        np.round(gen_res, 6).tolist(),
        np.allclose(gen_res, [0.09, 0.30], atol=1e-8),
    )
    exp.check(
        "F(generating) = 0.6765",
        round(float(report.objective), 6),
        abs(float(report.objective) - 0.6765) < 1e-8,
    )
    exp.check(
        "learned from generating reaches F = 0.6 = Huber bound",
        f"F = {float(learned.objective):.6f}, bound = {bound:.6f}",
        abs(float(learned.objective) - 0.6) < 1e-8 and abs(bound - 0.6) < 1e-12,
    )
    exp.check(
        "learned dictionary is the absorbed [p, (2p+1.5c)/2.5]",
        f"max |atom error| {np.abs(D_learned - D_abs).max():.1e}",
        np.abs(D_learned - D_abs).max() < 1e-6,
    )
    exp.check(
        "the parent's code is 0 where the child fires",
        f"{parent_code_with_child:.1e}",
        parent_code_with_child < 1e-10,
    )

    # ---- part 2: one parent, three exclusive children, widths 1..6 -----------------------
    widths = range(1, 6) if exp.quick else range(1, 7)
    seeds = range(4) if exp.quick else range(8)
    steps = 60 if exp.quick else 150
    exact = width_sweep(one_parent_three_children(), widths, seeds, steps)
    variants = {"noiseless (10 points)": exact}
    if not exp.quick:
        noisy = one_parent_three_children(n=100, d=8, noise=0.1)
        variants["noise 0.1, d = 8 (100 points)"] = width_sweep(noisy, widths, range(6), steps)
    rows = []
    for w in widths:
        rows.append(
            [w, THEORY_GAPS.get(w, "-")] + [v[w][0] for v in variants.values()] + [exact[w][1]]
        )
    exp.table(
        "One parent, three exclusive children: F - bound by width (best of seeds)",
        ["k", "THEORY"]
        + [f"measured, {name}" for name in variants]
        + ["max 2.2 residual / lam (noiseless)"],
        rows,
        note="Noiseless data have 4 distinct directions, so F = bound exactly from k = 4 (THEORY "
        "3); "
        "THEORY's positive values at k = 4, 5 are reproduced only with noise, whose exact level "
        "THEORY does not state. Differences to THEORY are within 0.05 in both variants.",
    )
    gaps = np.array([exact[w][0] for w in widths])
    exp.check(
        "F - bound strictly decreasing for k < 4 (noiseless)",
        np.round(gaps[:4], 4).tolist(),
        bool(np.all(np.diff(gaps[:4]) < -1e-6)),
    )
    exp.check(
        "F = bound for k >= 4 (noiseless: 4 directions)",
        f"{gaps[3:].max():.1e}",
        gaps[3:].max() < 1e-8,
    )
    for name, v in variants.items():
        diff = max(abs(v[w][0] - THEORY_GAPS[w]) for w in THEORY_GAPS if w in v)
        exp.check(
            f"F - bound within 0.05 of THEORY's values, k = 1..5 ({name})",
            f"max diff {diff:.3f}",
            diff < 0.05,
        )
    P = np.eye(4)[0]
    U = unit(2 * P + 1.5 * np.eye(4)[1:])
    D3, D4 = exact[3][2], exact[4][2]
    cos3 = np.sort(np.max(D3 @ U.T, axis=0))
    exp.check(
        "k = 3: each child direction p + c_j has its own atom (parent absorbed)",
        f"cosines {np.round(cos3, 3).tolist()}",
        cos3.min() > 0.9 and len(set(np.argmax(D3 @ U.T, axis=0))) == 3,
    )
    cos4 = np.max(D4 @ np.vstack([P, U]).T, axis=0)
    exp.check(
        "k = 4: the parent returns as its own atom, children stay p + c_j",
        f"cosines {np.round(cos4, 4).tolist()}",
        cos4.min() > 0.999,
    )

    # ---- figure ----------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.bar(np.arange(2) - 0.2, gen_res, 0.4, label="generating [p, c]")
    ax.bar(
        np.arange(2) + 0.2,
        np.maximum(np.asarray(learned.report.atoms.constraint), 1e-17),
        0.4,
        label="learned (absorbed)",
    )
    ax.set(
        xticks=[0, 1],
        xticklabels=["parent atom", "child atom"],
        yscale="log",
        ylabel="|s_k/m_k - lam d_k|",
        title="Stationarity residual (THEORY 2.2)",
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    ks = sorted(THEORY_GAPS)
    ax.plot(ks, [THEORY_GAPS[k] for k in ks], "k--", marker="x", label="THEORY 7")
    for name, v in variants.items():
        ax.plot(list(widths), [v[w][0] for w in widths], "o-", label=name)
    ax.set(xlabel="width k", ylabel="F - Huber bound", title="One parent, three children")
    ax.legend(fontsize=8)
    ax = axes[2]
    basis = np.vstack([P, U])
    table = np.vstack([D3 @ basis.T, np.full((1, 4), np.nan), D4 @ basis.T])
    im = ax.imshow(table, cmap="viridis", vmin=0, vmax=1)
    ax.set(
        xticks=range(4),
        xticklabels=["p", "p+c1", "p+c2", "p+c3"],
        yticks=[1, 5.5],
        yticklabels=["k = 3", "k = 4"],
        title="cos(atom, direction)",
    )
    fig.colorbar(im, ax=ax)
    exp.savefig(fig)
    return exp.finish()


if __name__ == "__main__":
    main()
