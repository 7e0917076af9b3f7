"""Dense antipodal features (THEORY section 7).

Signals `x = s v + sum_j a_j f_j + noise` with a dense signed coefficient `s ~ N(0, 1)` on one
direction `v` and sparse nonnegative features `f_j` (each active with probability 0.15, magnitude
in [0.5, 1.5]). With nonnegative codes the optimum spends two atoms on `v`, with cosine about
-0.99, each firing on a large share of the points and never together. With signed codes one atom
does the same job: merging the pair into one signed atom loses almost nothing, while a
nonnegative dictionary with one atom fewer is clearly worse. (The Huber bound itself needs
separate atoms for `x` and `-x`.)

The firing rate. THEORY's ~42% comes with no stated scale of `s`, so it cannot be reproduced
as such. Its mechanism can, in a control without the sparse features (`x = s v + noise`, width 2):
the pair is `+-v` and atom `+v` fires iff `s + noise . v > lam`, at the rate
`P(N(0, sigma^2) > lam)`, `sigma^2 = scale^2 + 0.01^2`; with `s ~ N(0, 1.5^2)` and `lam = 0.3`
(`lam / scale = 0.2`, an assumption of ours) that is 42.07%, THEORY's figure. With the features
the rate is lower (33-35% here) and the pair is not exactly antipodal: by THEORY 2.3 each atom of
the pair is the mean partial residual of its points, which contains the residual `lam f_j` of
every active feature, so the pair tilts toward the features (cos about -0.99, not -1).

Sizes: 400 points (quick) or 2000 (full).
"""

import numpy as np

import sparsedict as sd

from ._common import Experiment, best_by_width, plt, sweep, unit

LAM = 0.3


NOISE = 0.01


def dense_plus_sparse(n, d=16, features=6, seed=0, scale=1.0):
    """`x = s v + A F + noise` with `s ~ N(0, scale^2)`."""
    rng = np.random.default_rng(seed)
    V = unit(rng.standard_normal((features + 1, d)))
    v, F = V[0], V[1:]
    s = scale * rng.standard_normal(n)
    A = (rng.random((n, features)) < 0.15) * rng.uniform(0.5, 1.5, (n, features))
    return s[:, None] * v + A @ F + NOISE * rng.standard_normal((n, d)), v, F


def dense_only_control(n, steps, scale=1.5):
    """Firing rates of the learned pair on `x = s v + noise` (`s ~ N(0, scale^2)`, width 2), and
    the rate THEORY's picture predicts: `P(N(0, scale^2 + NOISE^2) > lam)`."""
    from scipy.stats import norm

    X, v, _ = dense_plus_sparse(n, features=0, seed=1, scale=scale)
    rows, dictionaries = sweep(X, [2], range(2), LAM, steps, 1e-9)
    ((_, D),) = best_by_width(rows, dictionaries).values()
    A = np.asarray(sd.sparse_code(X, D, LAM).codes)
    cos_v = D @ v
    rates = (A[:, np.argmax(cos_v)] > 0).mean(), (A[:, np.argmin(cos_v)] > 0).mean()
    predicted = float(norm.sf(LAM / np.hypot(scale, NOISE)))
    return rates, predicted, float(cos_v.max()), float(cos_v.min())


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
    steps = 100 if exp.quick else 300
    rows, dictionaries = sweep(X, [k - 1, k], range(3), LAM, steps, 1e-9)
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
        f"firing rates {fire_a.mean():.3f} / {fire_b.mean():.3f} (THEORY, another setup: ~0.42); "
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
    # the firing rate, on the control without features (see the docstring)
    (rate_p, rate_m), predicted, cos_p, cos_m = dense_only_control(n, steps)
    # each atom is the normalised mean partial residual of its ~0.42 n points (THEORY 2.3): the
    # noise tilts it by about 0.01 sqrt(15 / (0.42 n)) / E[s - lam | s > lam] < 3e-3 rad at
    # n >= 400, so 1 - cos < 5e-6; 1e-4 leaves a margin of more than 4 such deviations
    exp.check(
        "control (x = s v + noise, width 2): the pair is +-v",
        f"1 - cos {1 - cos_p:.1e}, {1 + cos_m:.1e}",
        min(cos_p, -cos_m) > 1 - 1e-4,
    )
    # each atom's count of firing points is binomial(n, predicted): 4 standard errors
    se = np.sqrt(predicted * (1 - predicted) / n)
    exp.check(
        f"control: each of the pair fires at P(s > lam) = {predicted:.4f} (THEORY: ~0.42), "
        "within 4 binomial SE",
        f"{rate_p:.4f}, {rate_m:.4f} (tolerance {4 * se:.4f})",
        max(abs(rate_p - predicted), abs(rate_m - predicted)) <= 4 * se,
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
