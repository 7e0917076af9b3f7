"""What the tests and benchmarks reach inside the package for, in one place.

Not public API: names here may change with the internals they expose. Tests and benchmarks
import from this module instead of from private names of private modules.
"""

from ._coding._codes import solve_codes as solve_codes
from ._coding._driver import default_tol as default_tol
from ._dictionary import init_dictionary as init_dictionary
from ._learning import _api as learning_hooks  # patch points: run_chunks, _certifier, ...
from ._learning._api import _whole as read_whole
from ._learning._chunks import scan_full_data as scan_full_data
from ._learning._chunks import scan_minibatches as scan_minibatches
from ._sweep._engine import SweepData as SweepData
from ._sweep._engine import clear_compiled as clear_compiled
from ._sweep._engine import learner_for as learner_for
from ._sweep._layout import make_layout as make_layout
from ._sweep._programs import TRACES as TRACES
from ._sweep._programs import member_summary as member_summary
from .streaming import _sources as streaming_sources  # patch points: _GAP_BYTES, _RUN_BYTES

__all__ = [
    "TRACES",
    "SweepData",
    "clear_compiled",
    "default_tol",
    "init_dictionary",
    "learner_for",
    "learning_hooks",
    "make_layout",
    "member_summary",
    "read_whole",
    "scan_full_data",
    "scan_minibatches",
    "solve_codes",
    "streaming_sources",
]
