"""Width sweeps: padding changes nothing, one compile per bucket, sharding, resume, the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sparsedict as sd
from sparsedict._sweep import _engine
from sparsedict._sweep._store import ResultStore

LAM = 0.1


@pytest.fixture(scope="module")
def X():
    return sd.datasets.feature_mixture(n=96, d=6, seed=3, dtype=np.float32)


def spec(**kw):
    base = dict(widths=(3, 8), seeds=(0,), lams=(LAM,), steps=6, chunk_size=3)
    base.update(kw)
    return sd.SweepSpec(**base)


def dictionaries(folder, members):
    store = ResultStore(folder, json_spec(folder))
    return [store.dictionary(*m) for m in members]


def json_spec(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        return sd.SweepSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f)["spec"].items()})


def test_padded_member_equals_unpadded(X, tmp_path):
    # width 3 padded to 8 inside one bucket, against width 3 alone (bucket 4: one padded atom)
    # and against the plain learner: same seed, same trajectory.
    sd.run_sweep(X, spec(buckets="single"), out=str(tmp_path / "single"), verbose=False)
    sd.run_sweep(X, spec(widths=(3,)), out=str(tmp_path / "alone"), verbose=False)
    padded = dictionaries(str(tmp_path / "single"), [(3, 0, LAM)])[0]
    alone = dictionaries(str(tmp_path / "alone"), [(3, 0, LAM)])[0]
    assert padded.shape == (3, 6)
    np.testing.assert_allclose(padded, alone, atol=1e-6)
    with np.load(tmp_path / "single" / "bucket_8.npz") as data:
        row = list(data["width"]).index(3)
        np.testing.assert_array_equal(data["dictionaries"][row][3:], 0.0)  # padding stays zero


def test_one_compile_per_bucket(X):
    before = dict(_engine.TRACES)
    s = spec(widths=(2, 5, 6, 7), seeds=(0, 1), steps=2, chunk_size=2)
    assert sorted(s.grouped()) == [2, 8]
    rows = sd.run_sweep(X, s, verbose=False)
    assert len(rows) == 8
    new = {key: n - before.get(key, 0) for key, n in _engine.TRACES.items() if n - before.get(key, 0)}
    assert new == {("chunk", 2): 1, ("chunk", 8): 1}  # 8 members, 2 buckets, 2 traces


def test_rows_are_consistent(X):
    rows = sd.run_sweep(X, spec(widths=(2, 4), seeds=(0, 1)), verbose=False)
    bound = float(sd.wide_limit.bound(np.asarray(X, np.float64), LAM))
    for r in rows:
        assert r["objective"] >= bound * (1 - 1e-5)
        np.testing.assert_allclose(r["gap_to_bound"], r["objective"] - r["bound"], rtol=1e-6)
        np.testing.assert_allclose(r["bound"], bound, rtol=1e-5)
        assert 0 <= r["mean_l0"] <= r["width"]
        assert r["explained_variance"] <= 1
    # wider dictionaries do better on average
    mean = lambda w: np.mean([r["objective"] for r in rows if r["width"] == w])
    assert mean(4) < mean(2)


def test_interrupted_sweep_resumes_without_losing_buckets(X, tmp_path, monkeypatch):
    s = spec(widths=(2, 4, 8), steps=4, chunk_size=2)
    straight = sd.run_sweep(X, s, out=str(tmp_path / "straight"), verbose=False)
    calls = []
    original = _engine.run_bucket

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the third bucket is interrupted
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(_engine, "run_bucket", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sd.run_sweep(X, s, out=str(tmp_path / "resumed"), verbose=False)
    monkeypatch.setattr(_engine, "run_bucket", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    resumed = sd.run_sweep(X, s, out=str(tmp_path / "resumed"), verbose=False)
    assert calls == [2, 4, 8]  # finished buckets were not run again
    for a, b in zip(straight, resumed):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-6)
    with pytest.raises(ValueError, match="different spec"):
        sd.run_sweep(X, spec(widths=(2,)), out=str(tmp_path / "resumed"), verbose=False)


def test_members_sharded_over_virtual_devices_match_one_device(X, tmp_path):
    s = spec(widths=(2, 3, 4), seeds=(0,), steps=4, chunk_size=2, buckets="single")
    np.save(tmp_path / "X.npy", np.asarray(X))
    script = textwrap.dedent(
        f"""
        import numpy as np, jax, sparsedict as sd
        assert len(jax.devices()) == 4, jax.devices()
        X = np.load({str(tmp_path / "X.npy")!r})
        sd.run_sweep(X, sd.SweepSpec(widths=(2, 3, 4), seeds=(0,), lams=({LAM},), steps=4,
                     chunk_size=2, buckets="single"), out={str(tmp_path / "multi")!r}, verbose=False)
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=600)
    sd.run_sweep(X, s, out=str(tmp_path / "one"), verbose=False)
    members = [(w, 0, LAM) for w in (2, 3, 4)]
    for a, b in zip(dictionaries(str(tmp_path / "multi"), members), dictionaries(str(tmp_path / "one"), members)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_cli_sweep_and_certify(X, tmp_path, capsys):
    from sparsedict._cli import main

    data = tmp_path / "acts.npy"
    np.save(data, np.asarray(X))
    out = tmp_path / "sweep"
    assert main(["sweep", "--data", str(data), "--widths", "2,4", "--seeds", "0", "--steps", "2",
                 "--chunk-size", "2", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "objective" in printed and "bound" in printed
    assert (out / "results.csv").exists() and (out / "manifest.json").exists()
    pytest.importorskip("matplotlib")
    assert (out / "objective_vs_width.png").exists() and (out / "atom_stationarity.png").exists()
    D = ResultStore(str(out), json_spec(str(out))).dictionary(4, 0, LAM)
    np.savez(tmp_path / "dict.npz", W_dec=D * 2.0)  # an SAE decoder with non-unit rows
    args = ["certify", "--dictionary", str(tmp_path / "dict.npz"), "--data", str(data), "--lam", str(LAM)]
    with pytest.raises(SystemExit, match="--normalize"):
        main(args)
    assert main(args + ["--normalize"]) == 0
    assert "free atom" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kw, message",
    [(dict(widths=()), "widths must not be empty"), (dict(widths=(0,)), "positive integers"),
     (dict(lams=(-1.0,)), "lams must be > 0"), (dict(buckets="odd"), "buckets must be")],
)
def test_bad_spec(kw, message):
    with pytest.raises(ValueError, match=message):
        spec(**kw)
