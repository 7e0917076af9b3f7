"""Running an experiment of the repository's top-level `experiments` package from a test."""

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # `experiments` is a top-level package of the repository, not installed

from experiments import NAMES  # noqa: E402

__all__ = ["NAMES", "run"]


def run(name, mode, out):
    """`experiments.<name>.main([mode, "--out", out])`: the checks it made (it raises
    `PredictionFailed` when a prediction fails)."""
    module = importlib.import_module(f"experiments.{name}")
    return module.main([mode, "--out", str(out)])
