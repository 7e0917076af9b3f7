r"""Where a sweep's arrays live: a 2-d device mesh with axes `("members", "data")`.

- `layout="members"`: mesh (devices, 1). Members are split over the devices, the data replicated;
  no communication during training.
- `layout="data"`: mesh (1, devices). Every device holds every member and a slice of the signals
  (alternating) or of each minibatch (online); the sufficient statistics $A^\top A$, $A^\top X$
  and the means of the metrics are all-reduced by the compiler (GSPMD).

The same code runs on one device, many local devices, or many hosts after
`jax.distributed.initialize()`: global arrays are built from host data with
`jax.make_array_from_callback` (each process reads only the rows its devices hold) and results
come back to every host with `process_allgather`.
"""

import math
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class Layout(NamedTuple):
    mesh: Mesh
    kind: str

    @property
    def member_devices(self) -> int:
        return self.mesh.shape["members"]

    @property
    def data_devices(self) -> int:
        return self.mesh.shape["data"]

    def sharding(self, *axes) -> NamedSharding:
        return NamedSharding(self.mesh, P(*axes))


def make_layout(kind: str = "members", devices=None) -> Layout:
    devices = np.array(jax.devices() if devices is None else devices)
    shape = (devices.size, 1) if kind == "members" else (1, devices.size)
    return Layout(Mesh(devices.reshape(shape), ("members", "data")), kind)


def padded_members(m: int, layout: Layout) -> int:
    """Members per program: a multiple of the members axis (the last member is repeated)."""
    return math.ceil(m / layout.member_devices) * layout.member_devices


def check_divisible(count: int, layout: Layout, what: str):
    if count % layout.data_devices:
        raise ValueError(
            f"layout='data' splits {what} over {layout.data_devices} devices: {what} = {count} "
            f"must "
            f"be divisible by {layout.data_devices} (drop {count % layout.data_devices} signals or "
            f"change the batch size)"
        )


def global_array(host, sharding: NamedSharding):
    """A global array from host data (numpy or memmap); each process reads only its own slices."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: np.asarray(host[index]))


def to_host(tree):
    """Every leaf as a numpy array on every host (all-gathered across processes if needed)."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree_util.tree_map(fetch, tree)
