"""The command line: user errors as one line naming the flag or file; `certify --sae`."""

import json

import numpy as np
import pytest

import sparsedict as sd
from sparsedict._cli import main


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((40, 8))
    D = rng.standard_normal((12, 8))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    paths = {name: tmp_path / f"{name}.npy" for name in ("X", "D", "DT", "raw", "complex")}
    np.save(paths["X"], X)
    np.save(paths["D"], D)
    np.save(paths["DT"], D.T)
    np.save(paths["raw"], 3 * D)
    np.save(paths["complex"], D + 1j)
    return paths


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--dictionary", "missing.npy", "--lam", "0.1"], "missing.npy"),
        (["--dictionary", "{DT}", "--lam", "0.1"], "looks transposed (atoms as columns)"),
        (["--dictionary", "{raw}", "--lam", "0.1"], "not unit norm"),
        (["--dictionary", "{complex}", "--lam", "0.1"], "got dtype complex128"),
        (["--dictionary", "{D}", "--lam", "-1"], "lam must be >= 0"),
        (["--lam", "0.1"], "certify needs --dictionary and --lam"),
    ],
)
def test_certify_user_errors_are_one_line(files, capsys, args, expected):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    if "missing.npy" in args:
        args[args.index("missing.npy")] = str(files["X"].parent / "missing.npy")
    code, _, err = run(["certify", "--data", files["X"], *args], capsys)
    assert code == 2
    assert expected in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsedict certify: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "command, flag",
    [
        (["certify", "--dictionary", "{D}", "--lam", "0.1", "--data", "{both}"], "--data-key"),
        (
            ["certify", "--dictionary", "{both}", "--lam", "0.1", "--data", "{X}"],
            "--dictionary-key",
        ),
        (["sweep", "--dry-run", "--data", "{both}"], "--data-key"),
        (["sweep", "--dry-run", "--learner", "online", "--data", "{both}"], "--data-key"),
    ],
)
def test_a_file_of_several_arrays_names_the_key_flag(files, tmp_path, capsys, command, flag):
    both = tmp_path / "both.npz"
    np.savez(both, first=np.load(files["X"]), second=np.load(files["D"]))
    paths = {**{k: str(v) for k, v in files.items()}, "both": str(both)}
    argv = [a.format(**paths) for a in command] + (
        ["--out", tmp_path / "o"] * (command[0] == "sweep")
    )
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"holds several arrays ['first', 'second']: name one with {flag}" in err
    if command[0] == "sweep":  # the flag named picks the array; the earlier `--key` still works
        assert run([*argv, flag, "first"], capsys)[0] == 0
        assert run([*argv, "--key", "first"], capsys)[0] == 0


@pytest.mark.parametrize(
    "flag, value", [("--memory-budget", "12XB"), ("--n", "-5"), ("--widths", "a,b")]
)
def test_sweep_option_errors_name_the_flag(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected" in err and "Traceback" not in err


def test_certify_sae_checkpoint_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(1)
    atoms = rng.standard_normal((6, 10))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    X = (rng.random((300, 6)) < 0.3) * rng.uniform(0.5, 1.5, (300, 6)) @ atoms + 2.0
    trained = sd.train_sae(X, 6, 0.05, max_steps=50)
    sd.save_sae(trained, tmp_path / "sae")
    np.save(tmp_path / "acts.npy", X)
    common = ["certify", "--sae", tmp_path / "sae", "--data", tmp_path / "acts.npy", "--float64"]
    files = ["--json", tmp_path / "r.json", "--npz", tmp_path / "r.npz"]
    code, out, _ = run([*common, *files, "--chunk-size", "64"], capsys)
    assert code == 0
    assert "l1_coefficient / (2 s)" in out  # the lam convention is printed
    report = json.load(open(tmp_path / "r.json"))
    # --npz round trip: every JSON array and summary, and the directions the JSON leaves out
    with np.load(tmp_path / "r.npz") as saved:
        for part in ("summary", "per_atom", "per_signal"):
            for key, value in report[part].items():
                if value is None:
                    assert f"{part}/{key}" not in saved
                    continue
                want = np.asarray(value, dtype=float)  # JSON null (a NaN) becomes nan
                got = saved[f"{part}/{key}"].astype(float)
                np.testing.assert_array_equal(got, want, err_msg=f"{part}/{key}")
        assert float(saved["lam"]) == report["lam"]
        assert str(saved["sae/library"]) == report["sae"]["library"]
        S, u = saved["per_atom/split_strength"], saved["per_atom/split_direction"]
        assert u.shape == (6, 10)
    stored = sd.sae_checkpoints.load_sae(tmp_path / "sae")  # the float32 weights as saved
    ref = sd.optimality.certify(X - stored.b_dec, stored.D, report["lam"])
    np.testing.assert_allclose(S, np.asarray(ref.atoms.split_strength), rtol=1e-8)
    used = S > 0
    cosine = np.abs(np.sum(u * np.asarray(ref.atoms.split_direction), axis=1))
    np.testing.assert_allclose(cosine[used], 1.0, atol=1e-8)
    code, _, _ = run([*common, "--first-order-only", "--fail-above", "1e-12"], capsys)
    assert code == 1  # a 50-step SAE is far from stationary


def test_certify_npz_round_trip(files, capsys, tmp_path):
    """`certify --dictionary ... --npz F`: every array of the report, as `optimality.certify`
    computes it, read back from the file."""
    code, _, err = run(["certify", "--dictionary", files["D"], "--lam", "0.1", "--data",
                        files["X"], "--float64", "--npz", tmp_path / "r.npz"], capsys)  # fmt: skip
    assert code == 0, err
    X, D = np.load(files["X"]), np.load(files["D"])
    ref = sd.optimality.certify(X, D, 0.1)
    with np.load(tmp_path / "r.npz") as saved:
        for part, tree in (("per_atom", ref.atoms), ("per_signal", ref.signals),
                           ("free_atom", ref.free_atom)):  # fmt: skip
            for name in type(tree).__dataclass_fields__:
                want = np.asarray(getattr(tree, name))
                got = saved[f"{part}/{name}"]
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)
        assert float(saved["summary/objective"]) == pytest.approx(float(ref.objective), rel=1e-12)
        assert float(saved["summary/wide_limit_bound"]) == pytest.approx(
            float(sd.wide_limit.bound(X, 0.1)), rel=1e-12
        )
        assert saved["per_atom/split_direction"].shape == (12, 8)


def test_load_array_reads_a_column_major_file_whole(files):
    D = np.load(files["D"])
    assert np.load(files["DT"]).flags.f_contiguous  # np.save of a transposed array
    np.testing.assert_array_equal(sd.streaming.load_array(files["DT"]), D.T)


# --- --quiet / --verbose on every subcommand --------------------------------------------------


def _three_ways(argv, capsys, out_dir=None):
    """(stdout, stderr) of the command run --quiet, plain and --verbose; each must succeed.
    With `out_dir`, each run writes to its own `--out` folder below it."""
    outputs = {}
    for flag in ("--quiet", None, "--verbose"):
        extra = [] if out_dir is None else ["--out", out_dir / str(flag).strip("-")]
        code, out, err = run([*argv, *extra, *([flag] if flag else [])], capsys)
        assert code == 0, err
        outputs[flag] = (out, err)
    return outputs["--quiet"], outputs[None], outputs["--verbose"]


def test_demo_quiet_and_verbose(capsys):
    quiet, plain, verbose = _three_ways(
        ["demo", "--n", "16", "--d", "6", "--k", "10", "--float64"], capsys
    )
    assert quiet[1] == "" and "per-signal certificates" not in quiet[0]
    assert "signals" in quiet[0]  # the summary, the final result
    assert "sparsedict demo:" in plain[1] and "per-signal certificates" in plain[0]
    assert "solver steps per signal" not in plain[1]
    assert "solver steps per signal" in verbose[1] and "sparsedict demo:" in verbose[1]


def test_certify_quiet_and_verbose(files, capsys):
    argv = ["certify", "--data", files["X"], "--dictionary", files["D"], "--lam", "0.1"]
    quiet, plain, verbose = _three_ways(argv, capsys)
    assert quiet[0] == plain[0] == verbose[0]  # the same result
    assert quiet[1] == ""
    assert "certify: dictionary (12, 8)" in plain[1] and "re-solved" not in plain[1]
    assert "codes re-solved and residuals computed in" in verbose[1]


def test_sweep_quiet_and_verbose(files, tmp_path, capsys):
    argv = ["sweep", "--data", files["X"], "--widths", "2,3", "--seeds", "0", "--max-steps", "4"]
    argv += ["--chunk-size", "2", "--buckets", "single"]
    quiet, plain, verbose = _three_ways(argv, capsys, out_dir=tmp_path)
    for out, _ in (quiet, plain, verbose):
        assert "mean over seeds per width" in out
    assert quiet[1] == ""
    assert "sparsedict sweep:" in plain[1] and "[sweep] 2/2 bucket 1/1" in plain[1]
    assert "[sweep W=3] 2/4" not in plain[1]  # per-chunk lines only with --verbose
    assert "[sweep W=3] 2/4" in verbose[1] and "[sweep W=3] 4/4" in verbose[1]


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--quiet", "--verbose"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, buckets",
    [([], "single"), (["--n", "9000"], "pow2"), (["--buckets", "pow2"], "pow2")],
)
def test_sweep_bucket_policy(monkeypatch, capsys, extra, buckets):
    # --buckets auto: one bucket while n * max width * d <= 2^24 (default: 1024 * 64 * 32 = 2^21;
    # --n 9000 gives 9000 * 64 * 32 > 2^24)
    specs = []
    monkeypatch.setattr(sd, "plan_sweep", lambda X, spec, **kw: specs.append(spec) or "")
    assert run(["sweep", "--dry-run", *extra], capsys)[0] == 0
    assert specs[0].buckets == buckets
    assert len(specs[0].grouped()) == (1 if buckets == "single" else 5)
