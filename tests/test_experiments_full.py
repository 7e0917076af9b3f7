"""Every experiment's --full form (the sizes its docstring states) passes its own checks.

A file of its own so that the runs get a process of their own (see `run_suite.py`). Measured one
script at a time on a shared 2-core machine (load average 7-8): 434 s of user CPU time in all
(hierarchy 97, residual_structure 26, antipodal 113, width 132, real_data 66), 20.7 min of wall
time under that load.
"""

import pytest
from experiment_runs import NAMES, run


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_full_run(name, tmp_path):
    """The sizes the docstrings state; raises `PredictionFailed` if a check fails."""
    checks = run(name, "--full", tmp_path)  # raises if a prediction failed
    assert checks, f"{name} checked no prediction"
    text = (tmp_path / f"{name}.md").read_text()
    assert "*full run" in text and "**NO**" not in text
