"""Runs: safe resume (refusals, damaged files, crashes mid-write), argument checks, scale,
the SAE decoder bias, and one driver (a sweep member is the learner run alone)."""

import json
import os
import warnings

import numpy as np
import pytest
from problems import lasso_objective, reference_codes, unit_rows

import sparsedict as sd
from sparsedict._learning import _checkpoint
from sparsedict._learning._checkpoint import RunMismatch
from sparsedict._sweep._store import ResultStore

LAM = 0.1


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(3)
    D = unit_rows(rng.standard_normal((6, 8)))
    A = (rng.random((64, 6)) < 0.3) * rng.uniform(0.5, 1.5, (64, 6))
    return A @ D + 0.01 * rng.standard_normal((64, 8))


def learn(X, k=4, lam=LAM, **kw):
    base = dict(max_steps=6, chunk_size=3, stationarity_tol=0.0, seed=1)
    base.update(kw)
    return sd.learn_dictionary(X, k, lam, **base)


def crash_on_write(monkeypatch, after_calls):
    """Make the `after_calls`-th `np.savez` of the atomic writer write half a file and raise."""
    calls, original = [], np.savez

    def savez(path, **arrays):
        calls.append(path)
        if len(calls) == after_calls:
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 half a file")
            raise OSError("simulated crash while writing")
        return original(path, **arrays)

    monkeypatch.setattr(_checkpoint.np, "savez", savez)


# --- learner checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(k=3), "k: 4 -> 3"),
        (dict(lam=0.5), "lam: 0.1 -> 0.5"),
        (dict(seed=2), "seed: 1 -> 2"),
        (dict(revive=False), "learner.revive: True -> False"),
        (dict(X="other"), "data.rows"),
        (dict(X="longer"), "data.shape"),
        (dict(method="online"), "learner.class"),
    ],
)
def test_checkpoint_of_another_run_is_refused(X, tmp_path, change, named):
    path = str(tmp_path / "run.npz")
    learn(X, checkpoint=path)
    change = dict(change)
    data = {"other": X + 1e-3, "longer": np.concatenate([X, X[:4]])}.get(change.pop("X", None), X)
    with pytest.raises(RunMismatch, match=named.replace(".", r"\.")):
        learn(data, checkpoint=path, **change)


def test_checkpoint_refusal_for_train_sae(X, tmp_path):
    path = str(tmp_path / "sae.npz")
    kw = dict(max_steps=4, chunk_size=2, batch_size=16, stationarity_tol=0.0)
    sd.train_sae(X, 4, LAM, checkpoint=path, **kw)
    with pytest.raises(RunMismatch, match="lam: 0.1 -> 0.2"):
        sd.train_sae(X, 4, 0.2, checkpoint=path, **kw)
    with pytest.raises(RunMismatch, match="learning_rate"):
        sd.train_sae(X, 4, LAM, checkpoint=path, learning_rate=1e-2, **kw)


@pytest.mark.parametrize("method", ["alternating", "online"])
def test_crash_while_writing_a_checkpoint_loses_nothing(X, tmp_path, monkeypatch, method):
    kw = dict(method=method, batch_size=16)
    straight = learn(X, max_steps=9, **kw)
    path = str(tmp_path / "run.npz")
    crash_on_write(monkeypatch, after_calls=2)  # the checkpoint after step 6 is cut short
    with pytest.raises(OSError, match="simulated crash"):
        learn(X, max_steps=9, checkpoint=path, **kw)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # the step-3 checkpoint, no debris
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*damaged")  # whole: resumed, not recomputed
        resumed = learn(X, max_steps=9, checkpoint=path, **kw)
    np.testing.assert_allclose(resumed.dictionary, straight.dictionary, atol=1e-12)
    np.testing.assert_allclose(resumed.history.objective, straight.history.objective, atol=1e-12)


def test_damaged_checkpoint_is_reported_and_recomputed(X, tmp_path):
    straight = learn(X)
    path = tmp_path / "run.npz"
    learn(X, max_steps=3, checkpoint=str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = learn(X, checkpoint=str(path))
    np.testing.assert_allclose(again.dictionary, straight.dictionary, atol=1e-12)
    assert again.steps == 6


# --- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
        (dict(max_steps=0), ValueError, "max_steps .* must be >= 1"),
        (dict(init=np.eye(3, 8)), ValueError, r"init must have shape \(k, d\) = \(4, 8\)"),
        (dict(init=np.eye(4, 7)), ValueError, r"init must have shape"),
        (dict(lam=-0.1), ValueError, "lam must be a finite number > 0"),
        (dict(lam=float("nan")), ValueError, "lam must be a finite number > 0"),
        (dict(lam=0.0), ValueError, "lam must be a finite number > 0"),
        (dict(batch_size=0, method="online"), ValueError, "batch_size must be >= 1"),
        (dict(eval_size=0), ValueError, "eval_size must be >= 1"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
        (dict(forgetting=float("nan"), method="online"), ValueError, "forgetting must be"),
        (dict(k=2.5), TypeError, "k must be an int"),
    ],
)
def test_bad_arguments_are_named(X, kwargs, error, message):
    args = dict(k=4, lam=LAM)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        learn(X, **args)


def test_bad_sae_arguments_are_named(X):
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        sd.train_sae(X, 4, LAM, chunk_size=0)
    with pytest.raises(ValueError, match="max_steps"):
        sd.train_sae(X, 4, LAM, max_steps=0)


# --- scale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["alternating", "online"])
@pytest.mark.parametrize("scale", [2.0**-30 * 1.37, 1e-10, 1e8])
def test_learners_work_at_any_representable_scale(X, method, scale):
    X32 = np.asarray(X, np.float32)
    kw = dict(method=method, batch_size=16)
    reference = learn(X32, **kw)
    scaled = learn(X32 * np.float32(scale), lam=LAM * scale, **kw)
    # homogeneity: x, lam -> c x, c lam leaves D unchanged (up to float32 rounding of c x)
    np.testing.assert_allclose(scaled.dictionary, reference.dictionary, atol=2e-4)
    np.testing.assert_allclose(
        float(scaled.objective) / scale**2, float(reference.objective), rtol=1e-3
    )
    np.testing.assert_allclose(
        np.asarray(scaled.history.objective) / scale**2, reference.history.objective, rtol=1e-3
    )
    np.testing.assert_allclose(np.asarray(scaled.codes) / scale, reference.codes, atol=1e-3)
    # the objective is the independently recomputed objective at the data's scale
    f = lasso_objective(
        X32 * scale,
        np.asarray(scaled.dictionary, np.float64),
        np.asarray(scaled.codes),
        LAM * scale,
    ).mean()
    np.testing.assert_allclose(float(scaled.objective), f, rtol=1e-4)


def test_unrepresentable_scale_is_refused_not_reported_converged(X):
    X32 = np.asarray(X, np.float32) * np.float32(1e-20)
    with pytest.raises(ValueError, match="scale .* cannot be trained in float32"):
        learn(X32, lam=LAM * 1e-20, stationarity_tol=None, max_steps=30)
    with pytest.raises(ValueError, match="scale"):
        sd.train_sae(X32, 4, LAM * 1e-20, max_steps=2, chunk_size=2)


def test_sae_at_small_scale(X):
    X32 = np.asarray(X, np.float32)
    kw = dict(max_steps=20, chunk_size=10, batch_size=16, stationarity_tol=0.0)
    # Adam is not scale-equivariant (its steps on b_enc have a fixed size): a power-of-two scale
    # normalises to the very same data, so the runs are the same
    c = 2.0**-40
    reference = sd.train_sae(X32, 4, LAM, **kw)
    scaled = sd.train_sae(X32 * np.float32(c), 4, LAM * c, **kw)
    np.testing.assert_allclose(scaled.dictionary, reference.dictionary, atol=1e-6)
    np.testing.assert_allclose(float(scaled.objective) / c**2, float(reference.objective), 1e-5)
    np.testing.assert_allclose(np.asarray(scaled.sae.b_enc) / c, reference.sae.b_enc, atol=1e-5)


# --- SAE decoder bias -------------------------------------------------------------------------


def test_geometric_median_against_brute_force():
    from scipy.optimize import minimize

    from sparsedict._learning._sae import geometric_median

    rng = np.random.default_rng(0)
    P = rng.standard_normal((40, 3)) + np.array([5.0, 0, 0])
    P[:5] += 50.0  # outliers pull the mean, not the median
    median = np.asarray(geometric_median(P))
    best = minimize(lambda b: np.linalg.norm(P - b, axis=1).sum(), P.mean(0), tol=1e-12).x
    np.testing.assert_allclose(median, best, atol=1e-5)
    assert np.linalg.norm(median - P.mean(0)) > 1.0


def test_sae_decoder_bias_starts_at_the_data_and_learns_offset_data(X):
    offset = 20.0 * np.ones(X.shape[1])
    kw = dict(max_steps=300, chunk_size=100, batch_size=16, stationarity_tol=0.0, seed=0)
    biased = sd.train_sae(X + offset, 6, LAM, decoder_bias=True, **kw)
    centred = sd.train_sae(X, 6, LAM, **kw)
    # the objective of the biased SAE is that of its centred data: close to centring by hand
    # (without the median start b_dec stayed 0 and F was ~1e2 on data like this)
    assert float(biased.objective) < 1.5 * float(centred.objective)
    short = sd.train_sae(X + offset, 6, LAM, decoder_bias=True, max_steps=1, chunk_size=1)
    assert np.linalg.norm(np.asarray(short.sae.b_dec) - offset) < 2.0


# --- one driver: a sweep member is the learner run alone -------------------------------------


@pytest.mark.parametrize("learner", ["alternating", "online"])
def test_sweep_member_equals_the_learner_run_alone(X, tmp_path, learner):
    spec = sd.SweepSpec(
        widths=(3, 6),
        seeds=(0, 2),
        lams=(LAM,),
        max_steps=6,
        chunk_size=3,
        buckets="single",
        learner=learner,
        batch_size=16,
        eval_size=64,
    )
    result = sd.run_sweep(X, spec, out=str(tmp_path), verbose=False)
    store = ResultStore(str(tmp_path), spec)
    for width, seed, lam in spec.members():
        alone = sd.learn_dictionary(
            X,
            width,
            lam,
            seed=seed,
            method=learner,
            max_steps=6,
            chunk_size=3,
            batch_size=16,
            stationarity_tol=0.0,
        )
        np.testing.assert_allclose(store.dictionary(width, seed, lam), alone.dictionary, atol=1e-9)
        (row,) = [r for r in result.rows if (r["width"], r["seed"]) == (width, seed)]
        np.testing.assert_allclose(row["objective"], float(alone.objective), rtol=1e-9)


def test_sweep_members_stop_where_they_would_stop_alone(X, tmp_path):
    # Early stopping per member: a member certified at the end of a chunk is frozen, so its
    # steps and dictionary are those of `learn_dictionary` with the same stopping test, while
    # the rest of its bucket trains on. (Without freezing, every member runs until the last one
    # is certified, and the step counts below would all be equal.)
    tol, options = 2e-3, dict(max_steps=60, chunk_size=4)
    spec = sd.SweepSpec(
        widths=(2, 3, 6), seeds=(0,), lams=(LAM,), buckets="single", stationarity_tol=tol, **options
    )
    result = sd.run_sweep(X, spec, out=str(tmp_path), verbose=False)
    store = ResultStore(str(tmp_path), spec)
    steps = {}
    for width, seed, lam in spec.members():
        alone = sd.learn_dictionary(X, width, lam, seed=seed, stationarity_tol=tol, **options)
        (row,) = [r for r in result.rows if r["width"] == width]
        steps[width] = row["steps"]
        assert row["steps"] == len(alone.history.objective)
        np.testing.assert_allclose(store.dictionary(width, seed, lam), alone.dictionary, atol=1e-9)
    assert len(set(steps.values())) > 1, f"every member stopped at the same step: {steps}"


@pytest.mark.parametrize("stored", ["float16 file", "bfloat16 array"])
def test_half_precision_data_trains_in_float32_like_learn_dictionary(X, tmp_path, stored):
    import ml_dtypes

    if stored == "float16 file":
        data = str(tmp_path / "acts.npy")
        np.save(data, np.asarray(X, np.float16))
    else:
        data = np.asarray(X, ml_dtypes.bfloat16)
    spec = sd.SweepSpec(
        widths=(4,), seeds=(0,), max_steps=4, chunk_size=2, learner="online", batch_size=16
    )
    rows = sd.run_sweep(data, spec, out=str(tmp_path / "out"), verbose=False).rows
    alone = sd.learn_dictionary(
        data, 4, LAM, method="online", max_steps=4, chunk_size=2, batch_size=16,
        stationarity_tol=0.0,
    )  # fmt: skip
    assert alone.dictionary.dtype == np.float32
    D = ResultStore(str(tmp_path / "out"), spec).dictionary(4, 0, LAM)
    assert D.dtype == np.float32
    np.testing.assert_allclose(D, alone.dictionary, atol=1e-6)
    np.testing.assert_allclose(rows[0]["objective"], float(alone.objective), rtol=1e-5)


# --- sweep folders ----------------------------------------------------------------------------


def sweep_spec(**kw):
    base = dict(widths=(2, 3, 5), seeds=(0,), lams=(LAM,), max_steps=4, chunk_size=2)
    base.update(kw)
    return sd.SweepSpec(**base)


def numeric(rows):
    return [[r[k] for k in sorted(r) if k != "status"] for r in rows]


def test_sweep_folder_of_other_data_or_grouping_is_refused(X, tmp_path):
    out = str(tmp_path / "sweep")
    s = sweep_spec(widths=(3, 4), seeds=(0, 1, 2), buckets="single")
    sd.run_sweep(X, s, out=out, verbose=False)
    with pytest.raises(RunMismatch, match="data.shape"):
        sd.run_sweep(X[:32], s, out=out, verbose=False)  # as `--n 32` after `--n 64`
    with pytest.raises(RunMismatch, match="different spec"):
        sd.run_sweep(X, sweep_spec(), out=out, verbose=False)
    # a bucket interrupted while running in groups: another grouping is refused
    _, programs = sd.plan_sweep(X, s).buckets[4]
    whole = max(programs.peak_bytes.values())
    out2 = str(tmp_path / "grouped")
    sd.run_sweep(X, s, out=out2, verbose=False, memory_budget=whole - 1)
    os.remove(os.path.join(out2, "bucket_4.npz"))  # as if interrupted before the bucket ended
    ResultStore(out2, s).save_group(4, 0, [dict(width=3, seed=0, lam=LAM)], np.zeros((1, 4, 8)),
                                    np.zeros((1, 4)))  # fmt: skip
    with pytest.raises(RunMismatch, match="groups of"):
        sd.run_sweep(X, s, out=out2, verbose=False)


def test_sweep_crash_while_writing_loses_nothing(X, tmp_path, monkeypatch):
    s = sweep_spec()
    straight = sd.run_sweep(X, s, out=str(tmp_path / "straight"), verbose=False).rows
    out = str(tmp_path / "crashed")
    # np.savez calls: per bucket two checkpoints (steps 2 and 4), then the bucket file; the
    # crash hits bucket 4's file, after its last checkpoint
    crash_on_write(monkeypatch, after_calls=6)
    with pytest.raises(OSError, match="simulated crash"):
        sd.run_sweep(X, s, out=out, verbose=False)
    monkeypatch.undo()
    with open(os.path.join(out, "results.csv")) as f:
        assert len(f.read().strip().splitlines()) == 2  # header and bucket 2's member, whole
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*damaged")  # every file whole: nothing recomputed
        resumed = sd.run_sweep(X, s, out=out, verbose=False).rows
    np.testing.assert_allclose(numeric(resumed), numeric(straight), rtol=1e-6)
    with open(os.path.join(out, "results.csv")) as f:
        assert len(f.read().strip().splitlines()) == 1 + len(straight)  # no duplicates


def test_damaged_bucket_file_is_recomputed(X, tmp_path):
    s = sweep_spec()
    out = tmp_path / "sweep"
    straight = sd.run_sweep(X, s, out=str(out), verbose=False).rows
    bucket = out / "bucket_4.npz"
    raw = bytearray(bucket.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # one flipped byte: the zip CRC no longer matches
    bucket.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="bucket_4.npz"):
        again = sd.run_sweep(X, s, out=str(out), verbose=False).rows
    np.testing.assert_allclose(numeric(again), numeric(straight), rtol=1e-6)
    with open(out / "manifest.json") as f:
        assert sorted(json.load(f)["finished_buckets"]) == [2, 4, 8]


def test_sweep_rows_recompute_from_saved_dictionaries(X, tmp_path):
    s = sweep_spec(widths=(2, 5), max_steps=6, chunk_size=3)
    rows = sd.run_sweep(X, s, out=str(tmp_path), verbose=False).rows
    store = ResultStore(str(tmp_path), s)
    centred = X - X.mean(axis=0)
    for row in rows:
        D = store.dictionary(row["width"], row["seed"], row["lam"]).astype(np.float64)
        A = reference_codes(X, D, row["lam"])
        R = X - A @ D
        # explained variance of the saved dictionary with independently solved codes
        np.testing.assert_allclose(
            row["explained_variance"], 1 - np.sum(R * R) / np.sum(centred * centred), rtol=1e-6
        )
        np.testing.assert_allclose(
            row["objective"], lasso_objective(X, D, A, row["lam"]).mean(), rtol=1e-6
        )
        certified = row["stationarity"] <= 1e-3
        assert row["status"] == "certified" if certified else "not certified" in row["status"]


def test_cli_sweep_resumed_on_other_data_refuses(tmp_path, capsys):
    from sparsedict._cli import main

    out = str(tmp_path / "sweep")
    args = ["sweep", "--d", "6", "--widths", "2", "--seeds", "0", "--max-steps", "2"]
    args += ["--chunk-size", "2", "--out", out, "--quiet"]
    assert main(args + ["--n", "64"]) == 0
    capsys.readouterr()
    assert main(args + ["--n", "96"]) == 2  # not the old table under the new banner
    captured = capsys.readouterr()
    assert "data.shape: [64, 6] -> [96, 6]" in captured.err
    assert "objective" not in captured.out.split("\n", 1)[-1]
