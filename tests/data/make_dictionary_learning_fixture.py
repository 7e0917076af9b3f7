"""Regenerate tests/data/dictionary_learning_ae (needs torch): a dictionary_learning `AutoEncoder`
folder as `trainSAE` writes it (`config.json` + `torch.save(ae.state_dict())`), with the same
tensors in `reference.npz` (written from torch, for the torch-free reader's test)."""

import collections
import json
import os

import numpy as np
import torch

here = os.path.join(os.path.dirname(__file__), "dictionary_learning_ae")
rng = np.random.default_rng(0)
d, k = 8, 12
decoder = rng.standard_normal((d, k))
decoder /= np.linalg.norm(decoder, axis=0, keepdims=True)  # unit decoder columns
state = collections.OrderedDict(
    bias=torch.nn.Parameter(torch.tensor(0.3 * rng.standard_normal(d), dtype=torch.float32)),
    **{
        "encoder.weight": torch.tensor(decoder.T * 0.8, dtype=torch.float32),
        "encoder.bias": torch.tensor(-0.1 * rng.random(k), dtype=torch.float32),
        "decoder.weight": torch.tensor(decoder, dtype=torch.float32),
    },
)
torch.save(state, os.path.join(here, "ae.pt"))
np.savez(os.path.join(here, "reference.npz"), **{n: v.detach().numpy() for n, v in state.items()})
config = {
    "trainer": {
        "dict_class": "AutoEncoder",
        "trainer_class": "StandardTrainer",
        "activation_dim": d,
        "dict_size": k,
        "lr": 1e-3,
        "l1_penalty": 0.1,
        "warmup_steps": 1000,
        "resample_steps": None,
        "device": "cpu",
        "layer": 3,
        "lm_name": "test",
        "wandb_name": "StandardTrainer",
        "submodule_name": None,
    },
}
with open(os.path.join(here, "config.json"), "w") as f:
    json.dump(config, f, indent=4)
