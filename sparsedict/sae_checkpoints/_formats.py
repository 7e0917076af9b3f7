"""Checkpoint folders of SAELens, EleutherAI sparsify and saprmarks dictionary_learning.

Read from the libraries' own source (see docs/guides/sae-checkpoints.md for the table):

- SAELens (`sae_lens/saes/sae.py`, `SAE.save_model`): `cfg.json` + `sae_weights.safetensors` with
  `W_enc` (d, k), `b_enc` (k,), `W_dec` (k, d), `b_dec` (d,), JumpReLU `threshold` (k,). The
  encoder sees `x - b_dec * apply_b_dec_to_input`. Loss (`TrainingSAE.training_forward_pass`,
  `StandardTrainingSAE.calculate_aux_loss`): `sum_d (x - x_hat)^2` averaged over the batch plus
  `l1_coefficient * sum_k f_k ||W_dec_k||`, on activations scaled by `s`
  (`normalize_activations="expected_average_only_in"`, `s = sqrt(d) / E||x||`), folded into the
  saved weights at the end of training (`fold_activation_norm_scaling_factor`: `W_enc *= s`,
  `W_dec /= s`, `b_dec /= s`). Dividing the loss by `2 s^2` gives `lam = l1_coefficient / (2 s)`.
  Gated (`sae_lens/saes/gated_sae.py`, `GatedSAE.encode`): no `b_enc`; `b_gate`, `b_mag`,
  `r_mag` (k,); with `x' = x - b_dec`, `f = (x' W_enc + b_gate > 0) * relu(x' (W_enc *
  exp(r_mag)) + b_mag)`. Its loss (`GatedTrainingSAE.calculate_aux_loss`) puts the L1
  `l1_coefficient * sum_k relu(x' W_enc + b_gate)_k ||W_dec_k||` on the gate pre-activations, not
  on the codes `f`, and adds an auxiliary reconstruction from the gate path: no lasso lam.
- sparsify (`sparsify/sparse_coder.py`, `SparseCoder.save_to_disk`): `cfg.json` (with `d_in`,
  `k`, `activation`) + `sae.safetensors` with `encoder.weight` (k, d), `encoder.bias`, `W_dec`
  (k, d), `b_dec`; TopK on `relu(encoder(x - b_dec))`, loss FVU (no L1: lam = None).
- dictionary_learning (`dictionary_learning/training.py`, `trainers/standard.py`,
  `trainers/top_k.py`): `config.json` (`{"trainer": {...}}`) + `ae.pt` (`torch.save` of the
  state dict): `encoder.weight` (k, d), `encoder.bias`, `decoder.weight` stored (d, k) (an
  `nn.Linear(dict_size, activation_dim)`), decoder bias `bias` (AutoEncoder) or `b_dec` (TopK).
  `StandardTrainer`: `sum_d (x - x_hat)^2` batch mean `+ l1_penalty ||f||_1` with unit decoder
  columns; `StandardTrainerAprilUpdate` weights the L1 by the decoder norms: both give
  `lam = l1_penalty / 2`.
"""

import json
import os

import numpy as np

from ._loaded import LoadedSAE
from ._safetensors_io import read_safetensors
from ._torch_state_dict import read_torch_state_dict


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _loaded(path, decoder_key, W_enc, b_enc, W_dec, b_dec, **fields) -> LoadedSAE:
    """The `LoadedSAE` of encoder rows `W_enc` (k, d), decoder rows `W_dec` (k, d) and `b_dec`
    (d,), with their shapes checked and the decoder rows split into unit atoms and norms."""
    k, d = W_dec.shape
    if W_enc.shape != (k, d) or b_dec.shape != (d,):
        raise ValueError(
            f"{path}: inconsistent shapes: encoder {W_enc.shape}, decoder rows {W_dec.shape}, "
            f"b_dec {b_dec.shape}"
        )
    norms = np.linalg.norm(W_dec, axis=1)
    if np.any(norms == 0):
        zero = int(np.sum(norms == 0))
        raise ValueError(f"{path}: {decoder_key} has {zero} zero decoder rows; drop them first")
    return LoadedSAE(
        D=W_dec / norms[:, None], norms=norms, W_enc=W_enc, b_enc=b_enc, b_dec=b_dec, **fields
    )


def _scale_note(scaling_factor):
    if scaling_factor is None:
        return "s = 1 assumed (pass scaling_factor if training scaled the activations)"
    return f"s = {scaling_factor:g}"


def _saelens(path, scaling_factor):
    with open(os.path.join(path, "cfg.json")) as f:
        cfg = json.load(f)
    weights = {
        k: _f64(v)
        for k, v in read_safetensors(os.path.join(path, "sae_weights.safetensors")).items()
    }
    arch = cfg.get("architecture", "standard")
    if arch not in ("standard", "topk", "jumprelu", "batchtopk", "gated"):
        raise ValueError(f"{path}: SAELens architecture {arch!r} is not supported")
    norm = cfg.get("normalize_activations", "none")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(
            f"{path}: normalize_activations={norm!r} rescales each signal, which is not the "
            "dictionary-learning objective; certify the normalised activations with a plain SAE"
        )
    W_enc, W_dec, b_dec = weights["W_enc"].T, weights["W_dec"], weights["b_dec"]
    gated = arch == "gated"
    if gated:
        missing = {"b_gate", "b_mag", "r_mag"} - set(weights)
        if missing:
            raise ValueError(f"{path}: a gated SAELens SAE needs {sorted(missing)}")
        k = W_dec.shape[0]
        for name in ("b_gate", "b_mag", "r_mag"):
            if weights[name].shape != (k,):
                raise ValueError(f"{path}: {name} has shape {weights[name].shape}, not ({k},)")
        b_enc = weights["b_gate"]  # the gate path: W_enc with b_gate
    else:
        b_enc = weights.get("b_enc", np.zeros(W_dec.shape[0]))
    s = 1.0 if scaling_factor is None else float(scaling_factor)
    if norm == "expected_average_only_in":
        if scaling_factor is None:
            raise ValueError(
                f"{path}: the weights expect activations scaled by s (normalize_activations="
                "'expected_average_only_in', not folded); pass scaling_factor=s, e.g. "
                "sparsedict.sae_checkpoints.activation_scale(X) = sqrt(d) / mean ||x||"
            )
        # fold the scaling as SAELens does (fold_activation_norm_scaling_factor)
        W_enc, W_dec, b_dec = W_enc * s, W_dec / s, b_dec / s
    details = cfg.get("metadata", {}).get("training_architecture_details", {}) or {}
    coef = cfg.get("l1_coefficient", details.get("l1_coefficient"))
    lp = cfg.get("lp_norm", details.get("lp_norm", 1.0))
    lam, convention = None, f"SAELens {arch}: no L1 term in the loss; pass lam or target_l0"
    if gated:
        convention = (
            "SAELens gated: the L1 term acts on the gate pre-activations "
            "(l1_coefficient * sum_k relu(x' W_enc + b_gate)_k ||W_dec_k||), not on the codes, "
            "and an auxiliary gate-path reconstruction is added: no exact lasso lam; pass lam "
            "or target_l0"
        )
    if arch == "standard":
        if coef is None:
            convention = "SAELens standard: cfg.json has no l1_coefficient; pass lam"
        elif float(lp) != 1.0:
            convention = f"SAELens standard: lp_norm = {lp} is not an L1 penalty; pass lam"
        else:
            lam = float(coef) / (2.0 * s)
            convention = (
                f"SAELens: loss sum_d (x - x_hat)^2 + c sum_k f_k ||W_dec_k||, so "
                f"lam = l1_coefficient / (2 s) = {coef:g} / (2 * {s:g}) = {lam:g}; "
                + _scale_note(scaling_factor)
            )
    threshold = _f64(weights["threshold"]) if "threshold" in weights else None
    if threshold is not None and norm == "expected_average_only_in":
        threshold = threshold * s
    top_k = int(cfg["k"]) if arch in ("topk", "batchtopk") else None
    magnitude = {}
    if gated:  # W_enc is folded by s already; r_mag and b_mag are unchanged by the folding
        magnitude = dict(W_mag=W_enc * np.exp(weights["r_mag"])[:, None], b_mag=weights["b_mag"])
    return _loaded(
        path,
        "W_dec",
        W_enc,
        b_enc,
        W_dec,
        b_dec,
        library="saelens",
        activation={"standard": "relu"}.get(arch, arch),
        subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)),
        lam=lam,
        lam_convention=convention,
        top_k=top_k,
        threshold=threshold,
        config=cfg,
        **magnitude,
    )


def _sparsify(path, scaling_factor):
    with open(os.path.join(path, "cfg.json")) as f:
        cfg = json.load(f)
    weights = {
        k: _f64(v) for k, v in read_safetensors(os.path.join(path, "sae.safetensors")).items()
    }
    if cfg.get("transcode") or cfg.get("skip_connection") or "W_skip" in weights:
        raise ValueError(f"{path}: transcoders and skip connections are not autoencoders")
    if cfg.get("activation", "topk") != "topk":
        raise ValueError(f"{path}: sparsify activation {cfg.get('activation')!r} is not supported")
    W_enc, W_dec, b_dec = weights["encoder.weight"], weights["W_dec"], weights["b_dec"]
    del scaling_factor  # sparsify trains on raw activations
    return _loaded(
        path,
        "W_dec",
        W_enc,
        weights["encoder.bias"],
        W_dec,
        b_dec,
        library="sparsify",
        activation="topk",
        subtract_b_dec=True,
        lam=None,
        lam_convention="sparsify TopK: loss FVU with no L1 term; pass lam or target_l0",
        top_k=int(cfg["k"]),
        config=cfg,
    )


def _torch_load(path):
    try:
        return read_torch_state_dict(path)
    except Exception as plain_error:  # not a plain tensor state dict: torch itself may read it
        try:
            import torch
        except ImportError:
            raise ValueError(
                f"{path}: {plain_error}. Reading it needs torch: pip install torch "
                "(or pip install 'sparsedict[torch]')"
            ) from plain_error
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {
            k: v.detach().double().numpy() if v.is_floating_point() else v.detach().numpy()
            for k, v in state.items()
        }


def _dictionary_learning(path, scaling_factor):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    trainer = cfg.get("trainer", cfg)
    weights = {k: _f64(v) for k, v in _torch_load(os.path.join(path, "ae.pt")).items()}
    dict_class = trainer.get("dict_class", "AutoEncoder")
    trainer_class = trainer.get("trainer_class", "StandardTrainer")
    if dict_class not in ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE"):
        raise ValueError(f"{path}: dictionary_learning dict_class {dict_class!r} is not supported")
    W_enc = weights["encoder.weight"]
    W_dec = weights["decoder.weight"].T  # nn.Linear(dict_size, activation_dim): (d, k)
    b_dec = weights["bias"] if "bias" in weights else weights["b_dec"]
    s = 1.0 if scaling_factor is None else float(scaling_factor)
    lam, top_k, threshold = None, None, None
    activation = "relu"
    if dict_class == "AutoEncoder":
        if trainer_class not in ("StandardTrainer", "StandardTrainerAprilUpdate"):
            convention = f"dictionary_learning {trainer_class}: loss not recognised; pass lam"
        else:
            c = float(trainer["l1_penalty"])
            lam = c / (2.0 * s)
            weighted = (
                "L1 weighted by decoder norms"
                if trainer_class.endswith("Update")
                else ("unit decoder columns")
            )
            convention = (
                f"dictionary_learning {trainer_class}: loss sum_d (x - x_hat)^2 + l1_penalty "
                f"||f||_1 ({weighted}), so lam = l1_penalty / (2 s) = {c:g} / (2 * {s:g}) = "
                f"{lam:g}; " + _scale_note(scaling_factor)
            )
    else:
        activation = "topk" if dict_class == "AutoEncoderTopK" else "batchtopk"
        top_k = int(np.asarray(weights.get("k", trainer.get("k"))).reshape(()))
        if activation == "batchtopk" and "threshold" in weights:
            threshold = float(np.asarray(weights["threshold"]).reshape(()))
        convention = (
            f"dictionary_learning {dict_class}: no L1 term in the loss; pass lam or target_l0"
        )
    return _loaded(
        path,
        "decoder.weight",
        W_enc,
        weights["encoder.bias"],
        W_dec,
        b_dec,
        library="dictionary_learning",
        activation=activation,
        subtract_b_dec=True,
        lam=lam,
        lam_convention=convention,
        top_k=top_k,
        threshold=None if threshold is None else np.asarray(threshold),
        config=cfg,
    )


_FORMATS = (
    ("sae_weights.safetensors", "cfg.json", _saelens),
    ("sae.safetensors", "cfg.json", _sparsify),
    ("ae.pt", "config.json", _dictionary_learning),
)


def load_sae(path, *, scaling_factor: float | None = None) -> LoadedSAE:
    """Read an SAE checkpoint folder of SAELens, sparsify or dictionary_learning.

    Arguments:
        path: the folder (or any file in it).
        scaling_factor: `s`, the factor training multiplied the activations by (SAELens
            `expected_average_only_in`: `sqrt(d) / mean ||x||`; dictionary_learning's
            `normalize_activations` divides by a norm factor `nf`, so `s = 1 / nf`). It enters
            `lam`, and is folded into the weights when the checkpoint was saved unfolded.

    Returns:
        A [`LoadedSAE`][sparsedict.sae_checkpoints.LoadedSAE]: float64 weights, unit-norm atoms,
        norms, `b_dec`, the activation, and `lam` with `lam_convention` saying how it was derived.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        path = os.path.dirname(path) or "."
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such checkpoint folder: {path}")
    files = set(os.listdir(path))
    for weights, config, reader in _FORMATS:
        if weights in files:
            if config not in files:
                raise FileNotFoundError(f"{path} has {weights} but no {config}")
            return reader(path, scaling_factor)
    raise ValueError(
        f"{path}: not an SAE checkpoint folder; expected cfg.json + sae_weights.safetensors "
        "(SAELens), cfg.json + sae.safetensors (sparsify) or config.json + ae.pt "
        f"(dictionary_learning); found {sorted(files)[:10]}"
    )


def activation_scale(X) -> float:
    """SAELens' activation scaling `s = sqrt(d) / mean_i ||x_i||` (estimate_norm_scaling_factor)."""
    X = np.asarray(X)
    return float(np.sqrt(X.shape[1]) / np.mean(np.linalg.norm(X, axis=1)))
