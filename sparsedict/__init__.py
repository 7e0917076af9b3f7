"""sparsedict: nonnegative L1 sparse coding and dictionary learning in JAX, with certificates."""

import importlib.metadata

from . import datasets as datasets
from . import optimality as optimality
from . import sae_checkpoints as sae_checkpoints
from . import streaming as streaming
from . import wide_limit as wide_limit
from ._coding._active_set import ActiveSet as ActiveSet
from ._coding._base import AbstractCodingSolver as AbstractCodingSolver
from ._coding._coordinate_descent import CoordinateDescent as CoordinateDescent
from ._coding._driver import duality_gap as duality_gap
from ._coding._driver import sparse_code as sparse_code
from ._coding._fista import FISTA as FISTA
from ._coding._implicit import implicit_codes as implicit_codes
from ._coding._result import RESULTS as RESULTS
from ._coding._result import CodingResult as CodingResult
from ._coding._unrolled import unrolled_sparse_code as unrolled_sparse_code
from ._coding._value import lasso_value as lasso_value
from ._learning._api import LearnedDictionary as LearnedDictionary
from ._learning._api import TrainedSAE as TrainedSAE
from ._learning._api import learn_dictionary as learn_dictionary
from ._learning._api import train_sae as train_sae
from ._learning._checkpoint import RunMismatch as RunMismatch
from ._learning._metrics import StepInfo as StepInfo
from ._learning._sae import SAE as SAE
from ._objective import kkt_residual as kkt_residual
from ._objective import lam_max as lam_max
from ._progress import Progress as Progress
from ._sweep._engine import SweepPlan as SweepPlan
from ._sweep._engine import SweepResult as SweepResult
from ._sweep._engine import plan_sweep as plan_sweep
from ._sweep._engine import run_sweep as run_sweep
from ._sweep._memory import SweepDoesNotFit as SweepDoesNotFit
from ._sweep._spec import SweepSpec as SweepSpec
from .sae_checkpoints import lam_for_l0 as lam_for_l0
from .sae_checkpoints import load_sae as load_sae
from .sae_checkpoints import save_sae as save_sae

try:  # the version is written once, in pyproject.toml
    __version__ = importlib.metadata.version("sparsedict")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "AbstractCodingSolver",
    "ActiveSet",
    "CodingResult",
    "CoordinateDescent",
    "FISTA",
    "LearnedDictionary",
    "Progress",
    "RESULTS",
    "RunMismatch",
    "SAE",
    "StepInfo",
    "SweepDoesNotFit",
    "SweepPlan",
    "SweepResult",
    "SweepSpec",
    "TrainedSAE",
    "datasets",
    "duality_gap",
    "implicit_codes",
    "kkt_residual",
    "lam_for_l0",
    "lam_max",
    "lasso_value",
    "learn_dictionary",
    "load_sae",
    "optimality",
    "plan_sweep",
    "run_sweep",
    "sae_checkpoints",
    "save_sae",
    "sparse_code",
    "streaming",
    "train_sae",
    "unrolled_sparse_code",
    "wide_limit",
]
