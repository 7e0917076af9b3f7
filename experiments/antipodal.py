"""Dense antipodal features (THEORY section 7).

Signals `x = s v + sum_j a_j f_j + noise` with a dense signed coefficient `s ~ N(0, 1)` on one
direction `v` and sparse nonnegative features `f_j` (each active with probability 0.15, magnitude
in [0.5, 1.5]). With nonnegative codes the optimum spends two atoms on `v`, with cosine about
-0.99, each firing on a large share of the points (~42% in THEORY's example, ~33% here) and never
together. With signed codes one atom does the
same job: merging the pair into one signed atom loses almost nothing, while a nonnegative
dictionary with one atom fewer is clearly worse. (The Huber bound itself needs separate atoms for
`x` and `-x`.)
"""

import numpy as np

import sparsedict as sd

from ._common import Experiment, best_by_width, plt, sweep, unit

LAM = 0.3


def dense_plus_sparse(n, d=16, features=6, seed=0):
    rng = np.random.default_rng(seed)
    V = unit(rng.standard_normal((features + 1, d)))
    v, F = V[0], V[1:]
    s = rng.standard_normal(n)
    A = (rng.random((n, features)) < 0.15) * rng.uniform(0.5, 1.5, (n, features))
    return s[:, None] * v + A @ F + 0.01 * rng.standard_normal((n, d)), v, F


def signed_objective(X, D, lam):
    """F with signed codes for `D`: the nonnegative problem on `[D, -D]` (same objective)."""
    coded = sd.sparse_code(X, np.vstack([D, -D]), lam)
    A = np.asarray(coded.codes)
    R = X - A @ np.vstack([D, -D])
    return float(np.mean(0.5 * np.sum(R * R, axis=1) + lam * A.sum(axis=1)))


def main(argv=None):
    exp = Experiment("antipodal", argv, __doc__.splitlines()[0])
    n = 400 if exp.quick else 2000
    features = 6
    X, v, F = dense_plus_sparse(n, features=features)
    k = features + 2
    rows, dictionaries = sweep(X, [k - 1, k], range(3), LAM, 100 if exp.quick else 300, 1e-9)
    best = best_by_width(rows, dictionaries)
    (row_k, D), (row_k1, _) = best[k], best[k - 1]
    cos_v = D @ v
    a, b = int(np.argmax(cos_v)), int(np.argmin(cos_v))
    pair_cos = float(D[a] @ D[b])
    A = np.asarray(sd.sparse_code(X, D, LAM).codes)
    fire_a, fire_b = A[:, a] > 0, A[:, b] > 0
    cofire = float(np.mean(fire_a & fire_b))
    # signed codes: the pair merged into one atom, the other atoms kept
    merged = unit(D[a] - D[b])
    others = np.delete(D, [a, b], axis=0)
    D_signed = np.vstack([others, merged])
    F_signed = signed_objective(X, D_signed, LAM)
    F_k, F_k1 = row_k["objective"], row_k1["objective"]
    exp.table(
        f"Dense direction plus {features} sparse features: n = {n}, d = 16, lam = {LAM}",
        ["dictionary", "atoms", "codes", "F", "stationarity (rel. 2.2)"],
        [
            ["nonnegative optimum", k, "nonneg", F_k, row_k["max_relative_constraint"]],
            [
                "nonnegative, one atom fewer",
                k - 1,
                "nonneg",
                F_k1,
                row_k1["max_relative_constraint"],
            ],
            ["pair merged into one signed atom", k - 1, "signed", F_signed, "-"],
        ],
        note=f"Antipodal pair: cos(d_a, d_b) = {pair_cos:.4f}, cos with v = {cos_v[a]:.4f} / "
        f"{cos_v[b]:.4f}; "
        f"firing rates {fire_a.mean():.3f} / {fire_b.mean():.3f} (THEORY: ~0.42 each); "
        f"co-firing {cofire:.4f}. Huber bound {float(row_k['bound']):.4f}.",
    )
    exp.check(
        "two atoms point along +v and -v (|cos| >= 0.95)",
        f"{cos_v[a]:.4f}, {cos_v[b]:.4f}",
        cos_v[a] >= 0.95 and cos_v[b] <= -0.95,
    )
    exp.check(
        "the pair is nearly antipodal (cos about -0.99)",
        f"{pair_cos:.4f}",
        -1.0 <= pair_cos <= -0.97,
    )
    exp.check("the pair never co-fires", f"{cofire:.4f}", cofire == 0.0)
    # THEORY's ~42% is for its own scale of s; here an atom fires where |x . v| exceeds ~0.45
    exp.check(
        "each fires on a large share of points, 0.25-0.5 (THEORY's example: ~0.42)",
        f"{fire_a.mean():.3f}, {fire_b.mean():.3f}",
        0.25 <= fire_a.mean() <= 0.5 and 0.25 <= fire_b.mean() <= 0.5,
    )
    exp.check(
        "signed codes: one merged atom loses < 1% of F",
        f"{(F_signed - F_k) / F_k:+.4%}",
        (F_signed - F_k) / F_k < 0.01,
    )
    exp.check(
        "nonnegative codes: one atom fewer costs > 5x more",
        f"{(F_k1 - F_k) / F_k:+.3%}",
        F_k1 - F_k > 5 * max(F_signed - F_k, 1e-6),
    )

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    s = X @ v
    ax.scatter(s, A[:, a], s=4, label=f"atom +v (cos {cos_v[a]:.3f})")
    ax.scatter(s, A[:, b], s=4, label=f"atom -v (cos {cos_v[b]:.3f})")
    ax.set(xlabel="x . v", ylabel="code", title="The pair splits the signed coefficient")
    ax.legend(fontsize=8)
    ax = axes[1]
    im = ax.imshow(D @ D.T, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(title="atom cosines (nonnegative optimum)")
    fig.colorbar(im, ax=ax)
    ax = axes[2]
    labels = [f"nonneg, k={k}", f"nonneg, k={k - 1}", f"signed, k={k - 1}"]
    ax.bar(labels, [F_k, F_k1, F_signed], color=["C0", "C1", "C2"])
    ax.axhline(float(row_k["bound"]), color="k", ls="--", label="Huber bound")
    ax.set(ylabel="F", ylim=(float(row_k["bound"]) * 0.9, F_k1 * 1.05), title="Objective")
    ax.legend(fontsize=8)
    exp.savefig(fig)
    return exp.finish()


if __name__ == "__main__":
    main()
