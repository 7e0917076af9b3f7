r"""Save a [`TrainedSAE`][sparsedict.TrainedSAE] as a SAELens checkpoint folder.

sparsedict's SAE loss $\tfrac12\|x - \hat x\|^2 + \lambda\sum_k a_k \|d_k\|$ (per signal, batch
mean) is SAELens' standard loss divided by two with `l1_coefficient = 2 lam`, so the folder loads
back in SAELens (`SAE.load_from_disk`) and in [`load_sae`][sparsedict.sae_checkpoints.load_sae]
with the same `lam`.
"""

import json
import os

import numpy as np

from ._safetensors_io import write_safetensors


def save_sae(trained, path, *, dtype=np.float32) -> str:
    """Write `cfg.json` + `sae_weights.safetensors` for `trained` (a `TrainedSAE`) in `path`."""
    sae = trained.sae
    lam = float(np.asarray(trained.report.lam))
    W_dec = np.asarray(sae.D, dtype)
    k, d = W_dec.shape
    os.makedirs(path, exist_ok=True)
    write_safetensors(
        os.path.join(path, "sae_weights.safetensors"),
        {
            "W_dec": W_dec,
            "W_enc": np.asarray(sae.W_enc, dtype).T,
            "b_dec": np.asarray(sae.b_dec, dtype),
            "b_enc": np.asarray(sae.b_enc, dtype),
        },
        metadata={"format": "pt"},
    )
    cfg = {
        "architecture": "standard",
        "d_in": d,
        "d_sae": k,
        "dtype": np.dtype(dtype).name,
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "training_architecture": "standard",
            "training_architecture_details": {"l1_coefficient": 2.0 * lam, "lp_norm": 1.0},
            "trained_with": "sparsedict.train_sae",
        },
    }
    with open(os.path.join(path, "cfg.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return os.fspath(path)
