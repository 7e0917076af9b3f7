"""A sweep specification: widths x seeds x lams, grouped into padded width buckets."""

import dataclasses
import itertools
import json

from .._validation import int_at_least


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What to train. Every (width, seed, lam) combination is one member.

    Attributes:
        widths: dictionary widths (numbers of atoms).
        seeds: initialisation seeds.
        lams: L1 penalties.
        max_steps: training steps per member (alternating passes over all data, or online
            minibatches).
        chunk_size: steps per compiled chunk (progress and checkpoints between chunks).
        buckets: `"pow2"` pads each width to the next power of two (padding waste < 2x, one compile
            per power of two) or `"single"` pads every width to the largest (one compile).
        stationarity_tol: a member whose certified residual is at most this at the end of a
            chunk stops training there (its state and step count are kept, as if trained
            alone), and the bucket stops once every member has; 0: every member runs
            `max_steps`.
        code_tol: relative duality-gap tolerance of the code solves (None: dtype default).
        solver: coding solver.
        learner: `"alternating"` (exact codes of all data each step; the data and the codes of
            every member live on the devices) or `"online"` (minibatches streamed from the host,
            Mairal et al.; memory independent of the number of signals; the summary uses the
            first `eval_size` signals).
        batch_size: minibatch size of the online learner (all members see the same batches).
        shuffle_seed: the seed of the online minibatch order (shared by all members; a member
            with seed `s` is the run `learn_dictionary(X, width, lam, seed=s,
            shuffle_seed=shuffle_seed)`).
        eval_size: signals of the online learner's summary and stopping test.
        layout: `"members"` shards members over the devices (data replicated), `"data"` shards
            the signals (alternating) or each minibatch (online) over the devices, every device
            holding every member; sufficient statistics are reduced across devices.
    """

    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    seeds: tuple[int, ...] = (0, 1)
    lams: tuple[float, ...] = (0.1,)
    max_steps: int = 50
    chunk_size: int = 10
    buckets: str = "pow2"
    stationarity_tol: float = 0.0
    code_tol: float | None = None
    solver: str = "active_set"
    learner: str = "alternating"
    batch_size: int = 1024
    shuffle_seed: int = 0
    eval_size: int = 4096
    layout: str = "members"

    def __post_init__(self):
        for name in ("widths", "seeds", "lams"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if not value:
                raise ValueError(f"{name} must not be empty")
        if any(int(w) != w or w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive integers, got {self.widths}")
        if any(not (lam > 0) for lam in self.lams):
            raise ValueError(f"lams must be > 0, got {self.lams}")
        if self.buckets not in ("pow2", "single"):
            raise ValueError(f"buckets must be 'pow2' or 'single', got {self.buckets!r}")
        for name in ("max_steps", "chunk_size", "batch_size", "eval_size"):
            int_at_least(getattr(self, name), name)
        int_at_least(self.shuffle_seed, "shuffle_seed", 0)
        for seed in self.seeds:
            int_at_least(seed, "seeds (each)", 0)
        if self.learner not in ("alternating", "online"):
            raise ValueError(f"learner must be 'alternating' or 'online', got {self.learner!r}")
        if self.layout not in ("members", "data"):
            raise ValueError(f"layout must be 'members' or 'data', got {self.layout!r}")

    def members(self):
        """All (width, seed, lam), widths ascending."""
        return list(itertools.product(sorted(set(self.widths)), self.seeds, self.lams))

    def bucket_width(self, width: int) -> int:
        if self.buckets == "single":
            return max(self.widths)
        return 1 << (int(width) - 1).bit_length()

    def grouped(self):
        """{padded width: [members]}, smallest bucket first."""
        out = {}
        for member in self.members():
            out.setdefault(self.bucket_width(member[0]), []).append(member)
        return dict(sorted(out.items()))

    def to_json(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))


# Padded work per member and product below which one bucket is cheaper than one per power of two.
SINGLE_BUCKET_WORK = 2**24


def auto_buckets(n: int, d: int, widths) -> str:
    """The bucket policy for data of `n` signals in `d` dimensions: `"single"` when the widest
    member's products are small (`n * max(widths) * d <= 2^24`: then compiling the programs of
    each extra bucket, 5 to 15 s on a 2-core CPU, costs more than padding every width to the
    largest; the default sweep, n = 1024, d = 32, widths 4..64, took 3.8 min in one bucket against
    10.6 min in five, measured in one session on a loaded 2-core CPU with four programs per
    bucket), else
    `"pow2"` (padding waste under 2x)."""
    return "single" if n * max(widths) * d <= SINGLE_BUCKET_WORK else "pow2"
