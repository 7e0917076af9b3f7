"""SAE checkpoints of other libraries: read them, convert them to THEORY's objective, certify them.

[`load_sae`][sparsedict.sae_checkpoints.load_sae] reads SAELens, sparsify and dictionary_learning
folders into a [`LoadedSAE`][sparsedict.sae_checkpoints.LoadedSAE] (unit atoms, norms, `b_dec`,
the implied `lam`); [`save_sae`][sparsedict.sae_checkpoints.save_sae] writes a `TrainedSAE` as a
SAELens folder; [`lam_for_l0`][sparsedict.sae_checkpoints.lam_for_l0] finds the `lam` whose exact
codes have a target L0; [`sae_metrics`][sparsedict.sae_checkpoints.sae_metrics] reports the usual
SAE numbers next to the certificate; [`run_certify_sae`][sparsedict.sae_checkpoints.run_certify_sae]
is the command line's `certify --sae`.
"""

from ._command import run_certify_sae as run_certify_sae
from ._formats import activation_scale as activation_scale
from ._formats import load_sae as load_sae
from ._lam_for_l0 import lam_for_l0 as lam_for_l0
from ._loaded import LoadedSAE as LoadedSAE
from ._metrics import SAEMetrics as SAEMetrics
from ._metrics import sae_metrics as sae_metrics
from ._save import save_sae as save_sae

__all__ = [
    "LoadedSAE",
    "SAEMetrics",
    "activation_scale",
    "lam_for_l0",
    "load_sae",
    "run_certify_sae",
    "sae_metrics",
    "save_sae",
]
