"""Experiments reproducing the phenomena of THEORY.md with sparsedict itself.

Each module is a script, ``python -m experiments.NAME [--quick | --full] [--out DIR]``, that
writes a figure (PNG) and a results table (markdown) and raises `PredictionFailed` (exit status 1)
when a numerical prediction of the theory does not hold (``--full``, the default, runs the sizes
the module's docstring states):

- ``hierarchy``: parent/child absorption and how a parent is split across widths (THEORY 7);
- ``residual_structure``: the residual identities at a converged optimum (THEORY 2.2, 7);
- ``antipodal``: a dense signed direction costs two nearly antipodal atoms (THEORY 7);
- ``width``: objective against width, the Huber bound, and the exchange test (THEORY 3-5);
- ``real_data``: the diagnostics on image patches and MLP activations (SAE vs alternating vs
  the wide limit).
"""

NAMES = ("hierarchy", "residual_structure", "antipodal", "width", "real_data")
