"""Every experiment's --quick form runs, passes its own numerical checks and writes its outputs
(the --full forms: `test_experiments_full.py`, a separate process).

The experiments are their own references: each compares against a closed form from THEORY.md
(generating-dictionary residuals, the Huber bound, the KKT identities) and raises
`PredictionFailed` when a prediction fails.
"""

import pytest
from experiment_runs import NAMES, run


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_quick_run(name, tmp_path):
    checks = run(name, "--quick", tmp_path)
    assert checks, f"{name} checked no prediction"
    for suffix in (".png", ".md"):
        path = tmp_path / f"{name}{suffix}"
        assert path.exists() and path.stat().st_size > 0, f"{name} did not write {path.name}"
    assert "| yes |" in (tmp_path / f"{name}.md").read_text()
