"""SAE checkpoint folders of SAELens, sparsify and dictionary_learning, written exactly as each
library writes them, read by `load_sae` and checked against conversions done here in numpy."""

import json
import os

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import sparsedict
from sparsedict import optimality
from sparsedict.datasets import feature_mixture
from sparsedict.sae_checkpoints import lam_for_l0, load_sae, run_certify_sae, save_sae
from sparsedict.sae_checkpoints._safetensors_io import read_safetensors, write_safetensors
from sparsedict.sae_checkpoints._torch_state_dict import read_torch_state_dict

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "dictionary_learning_ae")
TIGHT = 1e-10  # float64 conversions: only rounding separates the two paths


@pytest.fixture(scope="module")
def trained():
    """A small weighted-L1 SAE with a decoder bias, trained here (data offset from the origin)."""
    X = feature_mixture(n=400, d=10, seed=1, dtype=np.float64) + 0.7
    t = sparsedict.train_sae(X, 16, 0.15, max_steps=300, norm="weighted", decoder_bias=True, seed=0)
    return X, t


def _numpy_certificate(X, W_dec_rows, b_dec, lam):
    """Independent conversion: unit rows, centring, then the in-memory certificate."""
    D = W_dec_rows / np.linalg.norm(W_dec_rows, axis=1, keepdims=True)
    return optimality.certify(X - b_dec, D, lam)


def _loaded_certificate(X, sae, lam):
    from sparsedict.optimality._chunked import certify_chunked

    return certify_chunked(X, sae.D, lam, center=sae.b_dec, chunk_size=96).report


def _same(ref, got):
    assert abs(float(ref.objective) - float(got.objective)) < TIGHT
    np.testing.assert_allclose(
        np.asarray(got.atoms.relative_constraint),
        np.asarray(ref.atoms.relative_constraint),
        rtol=0,
        atol=TIGHT,
    )


def _encoder_objective(X, sae, lam):
    """THEORY's objective with the encoder's codes on unit atoms (a = f ||W_dec_k||)."""
    a = sae.unit_codes(X)
    r = X - sae.b_dec - a @ sae.D
    return np.mean(0.5 * np.sum(r * r, 1) + lam * a.sum(1))


# --- SAELens ----------------------------------------------------------------------------------


def _write_saelens(path, W_enc_dk, b_enc, W_dec_kd, b_dec, cfg, dtype=np.float32):
    os.makedirs(path, exist_ok=True)
    tensors = {"W_dec": W_dec_kd, "W_enc": W_enc_dk, "b_dec": b_dec, "b_enc": b_enc}
    write_safetensors(
        os.path.join(path, "sae_weights.safetensors"),
        {k: np.asarray(v).astype(dtype) for k, v in tensors.items()},
    )
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)


def _saelens_cfg(d, k, c):
    # SAELens 6 `TrainingSAE.save_inference_model`: inference fields, training details in metadata
    return {
        "d_in": d, "d_sae": k, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none", "architecture": "standard",
        "metadata": {
            "sae_lens_version": "6.0.0", "hook_name": "blocks.0.hook_resid_pre",
            "training_architecture": "standard",
            "training_architecture_details": {"l1_coefficient": c, "lp_norm": 1.0,
                                              "l1_warm_up_steps": 0, "decoder_init_norm": 0.1},
        },
    }  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32, ml_dtypes.bfloat16])
def test_saelens_folder_matches_numpy_conversion(trained, tmp_path, dtype):
    X, t = trained
    s = 2.5  # training scaled the activations by s, then folded it (fold_activation_norm_...)
    lam_train = float(t.report.lam)
    c = 2 * lam_train * s  # a SAELens loss on s x with this l1_coefficient is this lam on x
    sae = t.sae
    W_enc = np.asarray(sae.W_enc).T * s  # (d, k), folded
    W_dec = np.asarray(sae.D) / s  # (k, d), folded
    b_dec, b_enc = np.asarray(sae.b_dec) / s, np.asarray(sae.b_enc)
    _write_saelens(tmp_path, W_enc, b_enc, W_dec, b_dec, _saelens_cfg(10, 16, c), dtype)
    stored = {k: np.asarray(v, np.float64) for k, v in read_safetensors(
        tmp_path / "sae_weights.safetensors").items()}  # fmt: skip
    loaded = load_sae(tmp_path, scaling_factor=s)
    assert loaded.lam == pytest.approx(c / (2 * s), rel=1e-15)
    Xs = X / s  # the raw activations the folded SAE reads
    ref = _numpy_certificate(Xs, stored["W_dec"], stored["b_dec"], c / (2 * s))
    _same(ref, _loaded_certificate(Xs, loaded, loaded.lam))
    # The library's own loss on scaled activations equals 2 s^2 times THEORY's objective.
    f = np.maximum((Xs - stored["b_dec"]) @ stored["W_enc"] + stored["b_enc"], 0.0)
    W_s, b_s = stored["W_dec"] * s, stored["b_dec"] * s  # unfolded: the training weights
    r = Xs * s - (f @ W_s + b_s)
    library_loss = np.mean(np.sum(r * r, 1) + c * np.sum(f * np.linalg.norm(W_s, axis=1), 1))
    assert library_loss == pytest.approx(2 * s**2 * _encoder_objective(Xs, loaded, loaded.lam),
                                         rel=1e-12)  # fmt: skip


def _numpy_gated_encode(x, stored):
    """SAELens `GatedSAE.encode`, written here from its source: gate and magnitude paths."""
    sae_in = x - stored["b_dec"]
    active = (sae_in @ stored["W_enc"] + stored["b_gate"] > 0).astype(np.float64)
    magnitude = sae_in @ (stored["W_enc"] * np.exp(stored["r_mag"])) + stored["b_mag"]
    return active * np.maximum(magnitude, 0.0)


def _write_saelens_gated(path, rng, d, k, norm="none"):
    tensors = {
        "W_enc": rng.standard_normal((d, k)) / np.sqrt(d),
        "W_dec": rng.standard_normal((k, d)) * rng.uniform(0.5, 2.0, (k, 1)) / np.sqrt(d),
        "b_dec": 0.3 * rng.standard_normal(d),
        "b_gate": 0.2 * rng.standard_normal(k),
        "b_mag": 0.2 * rng.standard_normal(k),
        "r_mag": 0.3 * rng.standard_normal(k),
    }
    os.makedirs(path, exist_ok=True)
    write_safetensors(os.path.join(path, "sae_weights.safetensors"), tensors)
    cfg = _saelens_cfg(d, k, 0.7) | {"architecture": "gated", "dtype": "float64",
                                      "normalize_activations": norm}  # fmt: skip
    cfg["metadata"] |= {"training_architecture": "gated",
                        "training_architecture_details": {"l1_coefficient": 0.7}}  # fmt: skip
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)
    return {k: np.asarray(v, np.float64) for k, v in read_safetensors(
        os.path.join(path, "sae_weights.safetensors")).items()}  # fmt: skip


def test_saelens_gated_folder_encodes_as_saelens(tmp_path):
    """A gated SAELens folder (no b_enc; b_gate, b_mag, r_mag): the loaded encoder equals the
    numpy gated encode, folded or not, and no lam is implied (the L1 is on the gate path)."""
    rng = np.random.default_rng(7)
    d, k = 10, 24
    X = feature_mixture(n=300, d=d, seed=3, dtype=np.float64) + 0.5
    stored = stored_folded = _write_saelens_gated(tmp_path / "folded", rng, d, k)
    sae = load_sae(tmp_path / "folded")
    assert sae.activation == "gated" and sae.lam is None
    assert "no exact lasso lam" in sae.lam_convention
    want = _numpy_gated_encode(X, stored)
    assert 0.1 < np.mean(want > 0) < 0.9  # both paths matter: some gates closed, some open
    np.testing.assert_allclose(sae.encode(X), want, rtol=0, atol=TIGHT)
    np.testing.assert_allclose(sae.W_dec, stored["W_dec"], rtol=0, atol=TIGHT)
    np.testing.assert_allclose(sae.b_dec, stored["b_dec"], rtol=0, atol=TIGHT)
    # unfolded (trained on s x): loaded with scaling_factor=s, it reads raw activations
    s = 1.7
    stored = _write_saelens_gated(tmp_path / "unfolded", rng, d, k, "expected_average_only_in")
    sae = load_sae(tmp_path / "unfolded", scaling_factor=s)
    np.testing.assert_allclose(sae.encode(X), _numpy_gated_encode(s * X, stored), atol=TIGHT)
    lines: list[str] = []
    np.save(tmp_path / "X.npy", s * X)
    assert run_certify_sae(tmp_path / "folded", tmp_path / "X.npy", out=lines.append) == 2
    assert "no exact lasso lam" in lines[-1]
    # with a lam, the whole command runs on it (the metrics use the gated encoder)
    np.save(tmp_path / "X.npy", X)
    assert run_certify_sae(tmp_path / "folded", tmp_path / "X.npy", lam=0.2, chunk_size=100,
                           second_order=False, json_path=tmp_path / "r.json",
                           out=lines.append) == 0  # fmt: skip
    l0_encoder = json.load(open(tmp_path / "r.json"))["per_signal"]["l0_encoder"]
    want = _numpy_gated_encode(X, stored_folded)
    np.testing.assert_array_equal(l0_encoder, np.sum(want > 0, axis=1))


def test_saelens_unfolded_scaling_needs_the_factor(trained, tmp_path):
    X, t = trained
    cfg = _saelens_cfg(10, 16, 0.3) | {"normalize_activations": "expected_average_only_in"}
    sae = t.sae
    _write_saelens(tmp_path, np.asarray(sae.W_enc).T, np.asarray(sae.b_enc),
                   np.asarray(sae.D), np.asarray(sae.b_dec), cfg)  # fmt: skip
    with pytest.raises(ValueError, match="scaling_factor"):
        load_sae(tmp_path)
    folded = load_sae(tmp_path, scaling_factor=2.0)
    stored = read_safetensors(tmp_path / "sae_weights.safetensors")
    np.testing.assert_allclose(folded.W_dec, np.asarray(stored["W_dec"], np.float64) / 2.0)
    np.testing.assert_allclose(folded.b_dec, np.asarray(stored["b_dec"], np.float64) / 2.0)


def test_save_sae_round_trip(trained, tmp_path):
    X, t = trained
    save_sae(t, tmp_path, dtype=np.float64)
    loaded = load_sae(tmp_path)
    assert loaded.library == "saelens" and loaded.lam == pytest.approx(float(t.report.lam))
    np.testing.assert_allclose(loaded.W_dec, np.asarray(t.sae.D), rtol=0, atol=1e-15)
    # the encoder objective is the one train_sae reports for its own SAE
    assert _encoder_objective(X, loaded, loaded.lam) == pytest.approx(
        float(t.encoder_objective), rel=1e-10
    )
    ref = _numpy_certificate(X, np.asarray(t.sae.D), np.asarray(t.sae.b_dec), loaded.lam)
    _same(ref, _loaded_certificate(X, loaded, loaded.lam))


# --- sparsify ---------------------------------------------------------------------------------


def _write_sparsify(path, enc_w, enc_b, W_dec, b_dec, k_top):
    os.makedirs(path, exist_ok=True)
    # `SparseCoder.save_to_disk`: safetensors `save_model` of the module, cfg.to_dict() + d_in
    write_safetensors(
        os.path.join(path, "sae.safetensors"),
        {"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec},
        metadata={"format": "pt"},
    )
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
           "num_latents": W_dec.shape[0], "k": k_top, "multi_topk": False,
           "skip_connection": False, "transcode": False, "d_in": W_dec.shape[1]}  # fmt: skip
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f)


def test_sparsify_folder_matches_numpy_conversion(trained, tmp_path):
    X, t = trained
    sae = t.sae
    enc_w, enc_b = np.asarray(sae.W_enc), np.asarray(sae.b_enc)  # (k, d) like nn.Linear
    W_dec, b_dec = np.asarray(sae.D) * 1.3, np.asarray(sae.b_dec)
    _write_sparsify(tmp_path, enc_w, enc_b, W_dec, b_dec, k_top=3)
    loaded = load_sae(tmp_path)
    assert loaded.lam is None and loaded.activation == "topk" and loaded.top_k == 3
    with pytest.raises(ValueError, match="no L1"):
        raise ValueError(loaded.lam_convention)
    # TopK codes as sparsify computes them: relu(encoder(x - b_dec)), keep the k largest
    pre = np.maximum((X - b_dec) @ enc_w.T + enc_b, 0.0)
    idx = np.argsort(-pre, axis=1)[:, :3]
    f = np.zeros_like(pre)
    np.put_along_axis(f, idx, np.take_along_axis(pre, idx, 1), 1)
    np.testing.assert_allclose(loaded.encode(X), f, rtol=0, atol=1e-12)
    np.testing.assert_allclose(loaded.encode(X) @ loaded.W_dec + loaded.b_dec, f @ W_dec + b_dec,
                               rtol=0, atol=1e-12)  # fmt: skip
    lam = 0.2
    _same(_numpy_certificate(X, W_dec, b_dec, lam), _loaded_certificate(X, loaded, lam))


# --- dictionary_learning ----------------------------------------------------------------------


def test_dictionary_learning_fixture_read_without_torch():
    """The committed ae.pt was written by torch.save; the torch-free reader gives its tensors."""
    ref = np.load(os.path.join(FIXTURE, "reference.npz"))
    got = read_torch_state_dict(os.path.join(FIXTURE, "ae.pt"))
    assert sorted(got) == sorted(ref.files)
    for name in ref.files:
        np.testing.assert_array_equal(got[name], ref[name])
        assert got[name].dtype == ref[name].dtype


def test_dictionary_learning_folder_matches_numpy_conversion():
    X = feature_mixture(n=300, d=8, seed=2, dtype=np.float64)
    loaded = load_sae(FIXTURE)
    ref = np.load(os.path.join(FIXTURE, "reference.npz"))
    c = 0.1  # config.json l1_penalty
    assert loaded.lam == pytest.approx(c / 2)
    W_dec_rows = np.asarray(ref["decoder.weight"], np.float64).T  # stored (d, k)
    b = np.asarray(ref["bias"], np.float64)
    _same(_numpy_certificate(X, W_dec_rows, b, c / 2), _loaded_certificate(X, loaded, loaded.lam))
    # StandardTrainer's loss: sum_d (x - x_hat)^2 + l1_penalty ||f||_1 = 2 F with lam = c / 2
    f = np.maximum((X - b) @ np.asarray(ref["encoder.weight"], np.float64).T
                   + np.asarray(ref["encoder.bias"], np.float64), 0.0)  # fmt: skip
    r = X - (f @ W_dec_rows + b)
    library_loss = np.mean(np.sum(r * r, 1) + c * np.sum(f, 1))
    # loosened: the stored columns are unit norm only to float32 rounding (the L1 is unweighted)
    assert library_loss == pytest.approx(2 * _encoder_objective(X, loaded, loaded.lam), rel=1e-6)


def test_torch_free_reader_refuses_code(tmp_path):
    torch = pytest.importorskip("torch")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    torch.save({"x": Payload()}, tmp_path / "ae.pt")
    with pytest.raises(Exception, match="refusing"):
        read_torch_state_dict(tmp_path / "ae.pt")


def test_dictionary_learning_topk_written_by_torch(trained, tmp_path):
    torch = pytest.importorskip("torch")
    X, t = trained
    sae = t.sae
    state = {
        "k": torch.tensor(4, dtype=torch.int),
        "threshold": torch.tensor(-1.0),
        "decoder.weight": torch.tensor(np.asarray(sae.D).T.copy()),  # (d, k)
        "encoder.weight": torch.tensor(np.asarray(sae.W_enc)),
        "encoder.bias": torch.tensor(np.asarray(sae.b_enc)),
        "b_dec": torch.nn.Parameter(torch.tensor(np.asarray(sae.b_dec))),
    }
    torch.save(state, tmp_path / "ae.pt")
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"trainer": {"dict_class": "AutoEncoderTopK", "trainer_class": "TopKTrainer",
                               "k": 4, "activation_dim": 10, "dict_size": 16}}, f)  # fmt: skip
    loaded = load_sae(tmp_path)
    assert loaded.activation == "topk" and loaded.top_k == 4 and loaded.lam is None
    _same(
        _numpy_certificate(X, np.asarray(sae.D), np.asarray(sae.b_dec), 0.2),
        _loaded_certificate(X, loaded, 0.2),
    )


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not an SAE checkpoint"):
        load_sae(tmp_path)


@pytest.mark.parametrize("library", ["saelens", "sparsify"])
def test_inconsistent_shapes_and_zero_decoder_rows_are_refused(tmp_path, library):
    rng = np.random.default_rng(0)
    k, d = 5, 4
    W_enc, W_dec, b_enc = rng.standard_normal((k, d)), rng.standard_normal((k, d)), np.zeros(k)

    def write(path, W_dec, b_dec):
        if library == "saelens":
            _write_saelens(path, W_enc.T, b_enc, W_dec, b_dec, _saelens_cfg(d, k, 0.1), np.float64)
        else:
            _write_sparsify(path, W_enc, b_enc, W_dec, b_dec, k_top=2)

    write(tmp_path / "shapes", W_dec, np.zeros(d + 1))
    with pytest.raises(ValueError, match=r"shapes: inconsistent shapes: .*b_dec \(5,\)"):
        load_sae(tmp_path / "shapes")
    write(tmp_path / "zero", np.concatenate([W_dec[:-1], np.zeros((1, d))]), np.zeros(d))
    with pytest.raises(ValueError, match="zero: W_dec has 1 zero decoder rows"):
        load_sae(tmp_path / "zero")


# --- lam for a target L0, the command -----------------------------------------------------------


@pytest.mark.parametrize("target", [2.0, 5.0])
def test_lam_for_l0_hits_the_target(target):
    X = feature_mixture(n=300, d=12, seed=3, dtype=np.float64)
    D = np.random.default_rng(0).standard_normal((30, 12))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    lam, l0 = lam_for_l0(X, D, target)
    codes = sparsedict.sparse_code(X, D, lam).codes  # independent re-solve at that lam
    measured = float(jnp.mean(jnp.sum(codes > 0, axis=-1)))
    assert abs(measured - target) <= 0.02 * target
    assert l0 == pytest.approx(measured)


def test_run_certify_sae_json_plot_and_exit_status(trained, tmp_path):
    X, t = trained
    save_sae(t, tmp_path / "sae", dtype=np.float64)
    np.save(tmp_path / "X.npy", X)
    lines = []
    rc = run_certify_sae(
        tmp_path / "sae", tmp_path / "X.npy", json_path=tmp_path / "r.json",
        plot_path=tmp_path / "r.png", fail_above=1e6, chunk_size=128, out=lines.append,
    )  # fmt: skip
    assert rc == 0
    assert any("lam = l1_coefficient / (2 s)" in line for line in lines)
    report = json.load(open(tmp_path / "r.json"))
    s = report["summary"]
    ref = _numpy_certificate(X, np.asarray(t.sae.D), np.asarray(t.sae.b_dec), report["lam"])
    assert s["objective"] == pytest.approx(float(ref.objective), rel=1e-10)
    assert s["worst_relative_stationarity"] == pytest.approx(
        float(ref.stationary_residual), rel=1e-8
    )
    assert len(report["per_atom"]["relative_constraint"]) == 16
    for name in ("block_ratio", "split_strength"):  # the matrix-free THEORY 4.1, 4.2 tests
        want = np.asarray(getattr(ref.atoms, name))
        np.testing.assert_allclose(
            report["per_atom"][name], want, rtol=1e-8, atol=1e-10 * np.max(want), err_msg=name
        )
    assert s["max_split_strength"] == pytest.approx(float(np.max(ref.atoms.split_strength)))
    assert s["amortisation_gap"] == pytest.approx(float(t.amortisation_gap), rel=1e-8)
    assert {"explained_variance", "mse", "l0", "dead_latents", "unused_atoms", "cossim"} <= set(s)
    assert os.path.getsize(tmp_path / "r.png") > 0
    worst = s["worst_relative_stationarity"]
    assert run_certify_sae(tmp_path / "sae", tmp_path / "X.npy", fail_above=worst / 2,
                           second_order=False, out=lines.append) == 1  # fmt: skip
    assert run_certify_sae(tmp_path / "sae", tmp_path / "X.npy", target_l0=3.0,
                           second_order=False, out=lines.append) == 0  # fmt: skip


def test_run_certify_sae_topk_needs_lam(trained, tmp_path):
    X, t = trained
    sae = t.sae
    _write_sparsify(tmp_path / "sae", np.asarray(sae.W_enc), np.asarray(sae.b_enc),
                    np.asarray(sae.D), np.asarray(sae.b_dec), k_top=3)  # fmt: skip
    np.save(tmp_path / "X.npy", X)
    lines = []
    assert run_certify_sae(tmp_path / "sae", tmp_path / "X.npy", out=lines.append) == 2
    assert "pass lam or target_l0" in lines[-1]
    np.save(tmp_path / "bad.npy", X[:, :5])
    assert run_certify_sae(tmp_path / "sae", tmp_path / "bad.npy", lam=0.2, out=lines.append) == 2
    assert "expects (n, 10)" in lines[-1]
