"""Device-memory planning: predict a bucket's peak before it runs, and fit it to the budget.

The budget per device is the user's `memory_budget`, else the accelerator's `bytes_limit`, else
(CPU) 80% of physical memory shared by the local CPU devices. A bucket whose programs would not
fit is split into groups of members run one after another with the same executables; if a single
member per device does not fit, the sweep refuses before running anything.
"""

import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from ._layout import Layout, padded_members


class SweepDoesNotFit(MemoryError):
    """A bucket of a sweep does not fit in the memory budget even with one member per device.

    The message says which program needs how much and what to change.
    """


def gib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def device_budget(layout: Layout, memory_budget: float | None = None) -> int:
    """Bytes one device may use (`memory_budget` in bytes overrides the detection)."""
    if memory_budget is not None:
        return int(memory_budget)
    device = next(d for d in layout.mesh.devices.flat if d.process_index == jax.process_index())
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        budget = int(0.9 * stats["bytes_limit"])
    else:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        local = max(1, sum(d.platform == device.platform for d in jax.local_devices()))
        budget = int(0.8 * physical / local)
    if jax.process_count() > 1:  # every host must plan the same groups: take the first host's
        mib = multihost_utils.broadcast_one_to_all(np.int32(budget // 2**20))  # int32 without x64
        budget = int(mib) * 2**20
    return budget


def peak(programs) -> int:
    return max(programs.peak_bytes.values())


def plan_bucket(compile_for, m: int, layout: Layout, budget: int, label: str):
    """The programs of the largest group of members (<= m) whose predicted peak fits `budget`.

    `compile_for(members)` compiles the bucket's programs for a group of that many members.
    """
    unit = layout.member_devices
    full = padded_members(m, layout)
    programs = compile_for(full)
    if peak(programs) <= budget or full == unit:
        if peak(programs) > budget:
            raise SweepDoesNotFit(_refusal(programs, budget, label))
        return programs
    smallest = compile_for(unit)
    if peak(smallest) > budget:
        raise SweepDoesNotFit(_refusal(smallest, budget, label))
    per_member = max(1.0, (peak(programs) - peak(smallest)) / (full - unit))
    group = unit * max(1, int((budget - peak(smallest)) / per_member / unit) + 1)
    group = min(group, full - unit)
    while group > unit:
        programs = compile_for(group)
        if peak(programs) <= budget:
            return programs
        group -= unit
    return smallest


def _refusal(programs, budget, label):
    worst = max(programs.peak_bytes, key=programs.peak_bytes.get)
    return (
        f"{label}: one member per device needs {gib(peak(programs))} per device (program "
        f"{worst!r}), more than the memory budget of {gib(budget)}. Use learner='online' (memory "
        f"independent of the number of signals), layout='data' (signals split over devices), fewer "
        f"signals, a smaller batch_size or chunk_size, or raise memory_budget if the detection is "
        f"wrong."
    )
