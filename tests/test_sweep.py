"""Width sweeps: padding changes nothing, one compile per bucket, sharding, resume, the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sparsedict as sd
from sparsedict import _testing
from sparsedict._sweep import _engine
from sparsedict._sweep._store import ResultStore

LAM = 0.1


@pytest.fixture(scope="module")
def X():
    return sd.datasets.feature_mixture(n=96, d=6, seed=3, dtype=np.float32)


def spec(**kw):
    base = dict(widths=(3, 8), seeds=(0,), lams=(LAM,), max_steps=6, chunk_size=3)
    base.update(kw)
    return sd.SweepSpec(**base)


def dictionaries(folder, members):
    store = ResultStore(folder, json_spec(folder))
    return [store.dictionary(*m) for m in members]


def json_spec(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        return sd.SweepSpec(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in json.load(f)["spec"].items()}
        )


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
    _testing.clear_compiled()
    before = dict(_testing.TRACES)
    s = spec(widths=(2, 5, 6, 7), seeds=(0, 1), max_steps=2, chunk_size=2)
    assert sorted(s.grouped()) == [2, 8]
    rows = sd.run_sweep(X, s, verbose=False).rows
    assert len(rows) == 8
    new = {
        key: n - before.get(key, 0) for key, n in _testing.TRACES.items() if n - before.get(key, 0)
    }
    assert new == {("chunk", 2): 1, ("chunk", 8): 1}  # 8 members, 2 buckets, 2 traces
    sd.run_sweep(X, s, verbose=False)  # a rerun (or a run after a dry run) reuses the programs
    assert sum(_testing.TRACES.values()) - sum(before.values()) == 2


def test_rows_are_consistent(X):
    rows = sd.run_sweep(X, spec(widths=(2, 4), seeds=(0, 1)), verbose=False).rows
    bound = float(sd.wide_limit.bound(np.asarray(X, np.float64), LAM))
    for r in rows:
        assert r["objective"] >= bound * (1 - 1e-5)
        np.testing.assert_allclose(r["gap_to_bound"], r["objective"] - r["bound"], rtol=1e-6)
        np.testing.assert_allclose(r["bound"], bound, rtol=1e-5)
        assert 0 <= r["mean_l0"] <= r["width"]
        assert r["explained_variance"] <= 1
    # wider dictionaries do better on average

    def mean(w):
        return np.mean([r["objective"] for r in rows if r["width"] == w])

    assert mean(4) < mean(2)


def test_interrupted_sweep_resumes_without_losing_buckets(X, tmp_path, monkeypatch):
    s = spec(widths=(2, 4, 8), max_steps=4, chunk_size=2)
    straight = sd.run_sweep(X, s, out=str(tmp_path / "straight"), verbose=False).rows
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
    monkeypatch.setattr(
        _engine, "run_bucket", lambda *a, **k: calls.append(a[2]) or original(*a, **k)
    )
    resumed = sd.run_sweep(X, s, out=str(tmp_path / "resumed"), verbose=False).rows
    assert calls == [2, 4, 8]  # finished buckets were not run again
    for a, b in zip(straight, resumed, strict=True):
        assert a.keys() == b.keys()
        numbers = sorted(k for k in a if k != "status")
        np.testing.assert_allclose([a[k] for k in numbers], [b[k] for k in numbers], rtol=1e-6)
        assert a["status"] == b["status"]
    with pytest.raises(ValueError, match="different spec"):
        sd.run_sweep(X, spec(widths=(2,)), out=str(tmp_path / "resumed"), verbose=False)


LAYOUTS = [
    ("alternating", "members"),
    ("alternating", "data"),
    ("online", "members"),
    ("online", "data"),
]


def layout_spec(learner, layout):
    return sd.SweepSpec(
        widths=(2, 3, 4),
        seeds=(0,),
        lams=(LAM,),
        max_steps=4,
        chunk_size=2,
        buckets="single",
        learner=learner,
        layout=layout,
        batch_size=32,
        eval_size=64,
    )


@pytest.mark.slow
def test_layouts_over_virtual_devices_match_one_device(X, tmp_path):
    # members split over 4 devices, or signals (alternating) / minibatches (online) split over
    # them with the statistics all-reduced: the same dictionaries as on one device.
    np.save(tmp_path / "X.npy", np.asarray(X))
    script = textwrap.dedent(
        f"""
        import numpy as np, jax, sparsedict as sd
        from tests.test_sweep import LAYOUTS, layout_spec
        assert len(jax.devices()) == 4, jax.devices()
        X = np.load({str(tmp_path / "X.npy")!r})
        for learner, layout in LAYOUTS:
            sd.run_sweep(X, layout_spec(learner, layout), out={str(tmp_path)!r} +
            f"/{{learner}}-{{layout}}",
                         verbose=False)
        """
    )
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.path.dirname(os.path.dirname(__file__)),
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=900)
    members = [(w, 0, LAM) for w in (2, 3, 4)]
    for learner in ("alternating", "online"):
        sd.run_sweep(
            X, layout_spec(learner, "members"), out=str(tmp_path / f"one-{learner}"), verbose=False
        )
        one = dictionaries(str(tmp_path / f"one-{learner}"), members)
        for layout in ("members", "data"):
            many = dictionaries(str(tmp_path / f"{learner}-{layout}"), members)
            for a, b in zip(many, one, strict=False):
                np.testing.assert_allclose(a, b, atol=1e-5)


def test_cli_sweep_and_certify(X, tmp_path, capsys):
    from sparsedict._cli import main

    data = tmp_path / "acts.npy"
    np.save(data, np.asarray(X))
    out = tmp_path / "sweep"
    assert (
        main(
            [
                "sweep",
                "--data",
                str(data),
                "--widths",
                "2,4",
                "--seeds",
                "0",
                "--max-steps",
                "2",
                "--chunk-size",
                "2",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "objective" in printed and "bound" in printed
    assert (out / "results.csv").exists() and (out / "manifest.json").exists()
    pytest.importorskip("matplotlib")
    assert (out / "objective_vs_width.png").exists() and (out / "atom_stationarity.png").exists()
    D = ResultStore(str(out), json_spec(str(out))).dictionary(4, 0, LAM)
    np.savez(tmp_path / "dict.npz", W_dec=D * 2.0)  # an SAE decoder with non-unit rows
    args = [
        "certify",
        "--dictionary",
        str(tmp_path / "dict.npz"),
        "--data",
        str(data),
        "--lam",
        str(LAM),
    ]
    assert main(args) == 2  # a one-line error, no traceback
    assert "rerun with --normalize" in capsys.readouterr().err
    assert main(args + ["--normalize"]) == 0
    assert "free atom" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(widths=()), "widths must not be empty"),
        (dict(widths=(0,)), "positive integers"),
        (dict(lams=(-1.0,)), "lams must be > 0"),
        (dict(buckets="odd"), "buckets must be"),
    ],
)
def test_bad_spec(kw, message):
    with pytest.raises(ValueError, match=message):
        spec(**kw)


def test_vmapped_members_equal_members_one_at_a_time(X):
    s = spec(widths=(3, 5), seeds=(0, 1), buckets="single")
    mapped = sd.run_sweep(X, s, verbose=False, member_batch=1).rows
    vmapped = sd.run_sweep(X, s, verbose=False, member_batch=4).rows
    for a, b in zip(mapped, vmapped, strict=False):
        np.testing.assert_allclose(a["objective"], b["objective"], rtol=1e-6)


def test_vmapped_members_freeze_like_members_one_at_a_time(X):
    # Vmapped, a frozen member's branch is computed and dropped (lax.cond becomes a select): the
    # members must still stop at the same steps, with the same dictionaries.
    s = spec(widths=(2, 3, 6), buckets="single", stationarity_tol=2e-3, max_steps=60, chunk_size=4)
    mapped = sd.run_sweep(X, s, verbose=False, member_batch=1).rows
    vmapped = sd.run_sweep(X, s, verbose=False, member_batch=3).rows
    assert [r["steps"] for r in mapped] == [r["steps"] for r in vmapped]
    assert len({r["steps"] for r in mapped}) > 1, "every member stopped at the same step"
    for a, b in zip(mapped, vmapped, strict=True):
        np.testing.assert_allclose(a["objective"], b["objective"], rtol=1e-6)


def test_members_one_at_a_time_skip_the_untaken_branch():
    # On a CPU (`member_batch=1`) a frozen member must cost nothing: its `lax.cond` has to stay a
    # branch, not become a select that computes both sides (as a vmap over one member would).
    import jax
    import jax.numpy as jnp

    from sparsedict._sweep._programs import over_members

    ran = []

    def fn(x, skip):
        def work(x):
            jax.debug.callback(lambda v: ran.append(float(v)), x)
            return x + 1

        return jax.lax.cond(skip, lambda x: x, work, x)

    out = jax.jit(lambda xs, skip: over_members(fn, 1, xs, skip))(
        jnp.arange(3.0), jnp.array([False, True, False])
    )
    jax.effects_barrier()
    np.testing.assert_array_equal(out, [1.0, 1.0, 3.0])
    assert sorted(ran) == [0.0, 2.0]


def test_memory_plan_splits_a_bucket_or_refuses(X, tmp_path):
    s = spec(widths=(3, 5), seeds=(0, 1, 2), buckets="single")
    _, programs = sd.plan_sweep(X, s).buckets[5]
    assert programs.members == 6 and min(programs.peak_bytes.values()) > 0
    whole = max(programs.peak_bytes.values())
    # a budget just below the whole bucket's peak: the bucket runs in groups, same results
    plan = str(sd.plan_sweep(X, s, memory_budget=whole - 1))
    assert "group(s) of" in plan and "6 members in 1 group" not in plan
    split = sd.run_sweep(X, s, out=str(tmp_path / "split"), verbose=False, memory_budget=whole - 1)
    split, together = split.rows, sd.run_sweep(X, s, verbose=False).rows
    for a, b in zip(split, together, strict=False):
        np.testing.assert_allclose(a["objective"], b["objective"], rtol=1e-6)
    assert sorted(os.listdir(tmp_path / "split")) == [
        "bucket_5.npz",
        "manifest.json",
        "results.csv",
    ]
    with pytest.raises(sd.SweepDoesNotFit, match="memory budget of .*learner='online'"):
        sd.run_sweep(X, s, memory_budget=1000)
    for kw, message in [
        (dict(memory_budget=-1), "memory_budget"),
        (dict(member_batch=0), "member_batch"),
        (dict(devices=[]), "devices"),
    ]:
        with pytest.raises(ValueError, match=message):
            sd.run_sweep(X, s, **kw)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_match_one(X, tmp_path):
    # Two CPU processes joined by jax.distributed (the multi-host runtime), members split over
    # their devices: the results of one process alone.
    import socket

    np.save(tmp_path / "X.npy", np.asarray(X))
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    common = [
        "sweep",
        "--data",
        str(tmp_path / "X.npy"),
        "--widths",
        "2,3",
        "--seeds",
        "0",
        "--max-steps",
        "4",
        "--chunk-size",
        "2",
        "--layout",
        "members",
        "--quiet",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sparsedict",
                *common,
                "--out",
                str(tmp_path / "two"),
                "--distributed",
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out.decode()[-3000:]
    from sparsedict._cli import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    members = [(w, 0, LAM) for w in (2, 3)]
    for a, b in zip(
        dictionaries(str(tmp_path / "two"), members),
        dictionaries(str(tmp_path / "one"), members),
        strict=False,
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_online_sweep_streams_a_file_like_the_array(X, tmp_path):
    path = tmp_path / "acts.npy"
    np.save(path, np.asarray(X))
    s = spec(widths=(3, 4), learner="online", batch_size=16, eval_size=48)
    from_file = sd.run_sweep(str(path), s, verbose=False).rows
    in_memory = sd.run_sweep(np.asarray(X), s, verbose=False).rows
    for a, b in zip(from_file, in_memory, strict=False):
        assert a == b
    bad = np.asarray(X).copy()
    bad[50, 2] = np.nan
    np.save(path, bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        sd.run_sweep(
            str(path),
            spec(widths=(3,), learner="online", batch_size=32, eval_size=16, max_steps=8),
            verbose=False,
        )
