"""Public entry points: `learn_dictionary` and `train_sae`."""

import contextlib
import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float

from .. import _validation as check
from .. import streaming
from .._coding._codes import solve_codes
from .._coding._driver import default_tol
from .._objective import mean_objective
from .._progress import ProgressCallback
from ..optimality import OptimalityReport
from ..optimality._residuals import report
from . import _data
from ._alternating import Alternating
from ._chunks import scan_full_data, scan_minibatches
from ._loop import run_chunks
from ._metrics import StepInfo
from ._online import Online
from ._sae import SAE, SAETrainer


class LearnedDictionary(eqx.Module):
    """A learned dictionary with its training history and final optimality report.

    Attributes:
        dictionary: (k, d) unit-norm atoms.
        codes: (n, k) exact codes of the training data for `dictionary`.
        objective: F(dictionary, codes), the mean objective.
        history: per-step [`StepInfo`][sparsedict.StepInfo] (objective, reconstruction, L0, dead
            atoms, Riemannian gradient norm), stacked over steps.
        report: the [`OptimalityReport`][sparsedict.optimality.OptimalityReport] at the end.
        converged: whether the certified stationarity residual fell below `stationarity_tol`.
        steps: number of training steps taken.
    """

    dictionary: Float[Array, "k d"]
    codes: Float[Array, "n k"]
    objective: Float[Array, ""]
    history: StepInfo
    report: OptimalityReport
    converged: bool = eqx.field(static=True)
    steps: int = eqx.field(static=True)


class TrainedSAE(LearnedDictionary):
    """A trained SAE: `sae` (encoder, decoder) plus the exact-code analysis of its decoder.

    `objective` and `codes` are for exact codes of the decoder; `encoder_objective` uses the
    encoder's codes; `amortisation_gap = encoder_objective - objective >= 0`.
    """

    sae: SAE = None
    encoder_objective: Float[Array, ""] = None
    amortisation_gap: Float[Array, ""] = None


# One compiled program per learner configuration and shape, cached across calls.
_full_data_chunk = eqx.filter_jit(scan_full_data)
_minibatch_chunk = eqx.filter_jit(scan_minibatches)


@functools.lru_cache(maxsize=32)
def _adam(learning_rate):
    # Cached so repeated calls with the same rate reuse the compiled training chunk.
    return optax.adam(learning_rate)


def _tolerances(dtype, code_tol, stationarity_tol):
    """Defaults: code gap as `sparse_code`; stationarity 1e-8 in float64, 1e-4 in float32."""
    code_tol = default_tol(dtype) if code_tol is None else code_tol
    if stationarity_tol is None:
        stationarity_tol = 1e-8 if dtype == jnp.float64 else 1e-4
    return code_tol, stationarity_tol


def _streamed(X):
    """Whether `X` is read as a stream (a path, a list of paths, a source or a memory map)."""
    return _data.is_streamed(X)


def _whole(X):
    """In-memory signals: streamed input read whole (the alternating method needs all data)."""
    if not _streamed(X):
        return X
    source = streaming.open_signals(X)
    values = source.read(0, source.n)
    check.finite_rows(values, np.arange(source.n), source.name, "all signals")
    return values


def _positive_lam(lam) -> float:
    """`lam` as a Python float, finite and > 0 (the residuals and the scaling divide by it)."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a real number, got {lam!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    return value


def _nonnegative_float(value, name) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _loop_settings(max_steps, chunk_size, eval_size, seed, shuffle_seed, prefetch):
    """The settings every learner shares, checked (each error names its argument)."""
    check.int_at_least(max_steps, "max_steps (training steps; 0 would return untrained atoms)")
    check.int_at_least(chunk_size, "chunk_size")
    check.int_at_least(eval_size, "eval_size")
    check.int_at_least(seed, "seed", 0)
    check.int_at_least(shuffle_seed, "shuffle_seed", 0)
    check.int_at_least(prefetch, "prefetch", 0)


def _initial_dictionary(data, init, k, seed, center=None):
    """`init` (checked: (k, d), finite, nonzero atoms; normalised) or `k` drawn signals."""
    if init is None:
        return jnp.asarray(_data.initial_atoms(data.source, k, seed, data.dtype, center))
    init = np.asarray(init)
    if init.ndim != 2 or init.shape != (k, data.d):
        raise ValueError(
            f"init must have shape (k, d) = ({k}, {data.d}) (one row per atom), got shape "
            f"{init.shape}"
        )
    D0 = check.dictionary(init, data.d, data.dtype, name="init")[0]
    return D0 / jnp.linalg.norm(D0, axis=-1, keepdims=True)


def _described_rows(data, X, full, eval_size):
    """The signals a result describes, scaled: all of them for the alternating learner and for
    an in-memory array, the first `eval_size` of a stream (nothing reads a whole stream)."""
    if full or not _data.is_streamed(X):
        return data.device_rows(data.n, "all signals")
    m = min(eval_size, data.n)
    return data.device_rows(m, f"the evaluation signals 0 to {m - 1}")


def _options(module) -> dict:
    """The configuration of a learner (or a `Shuffle`) for the run record."""
    out = {"class": type(module).__name__}
    for field in dataclasses.fields(module):
        value = getattr(module, field.name)
        simple = isinstance(value, (str, int, float, bool)) or value is None
        out[field.name] = value if simple else type(value).__name__
    return out


def _array_hash(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, np.float64)).tobytes()).hexdigest()[
        :16
    ]


def _feed(data, batch_size, shuffle_seed, chunk_size, max_steps, shuffle, prefetch, split=None):
    """Chunks of `chunk_size` minibatches on the device(s), read ahead by `prefetch` chunks."""
    batches = _data.minibatches(data.source, batch_size, shuffle_seed, shuffle, data.dtype)
    device = None if split is None else split.sharding(1)
    if device is not None:
        split(np.empty((1, batches.batch_size, 0)), "batch_size", 1)  # divisible, or a clear error
    return streaming.Prefetcher(batches, chunk_size, depth=prefetch, stop=max_steps, device=device)


def _unscaled_history(history: StepInfo, data) -> StepInfo:
    """The history at the data's scale (objectives and gradients scale as `4^e`)."""
    c = 4.0**data.exponent
    return history._replace(
        objective=history.objective * c,
        reconstruction=history.reconstruction * c,
        grad_norm=history.grad_norm * c,
    )


class _data_parallel:
    """Signals split over `devices` (the dictionary replicated); GSPMD reduces the statistics."""

    def __init__(self, devices):
        if devices is not None and len(devices) == 0:
            raise ValueError(
                "devices must hold at least one device (or be None for the default device)"
            )
        self.mesh = None if devices is None else Mesh(np.array(list(devices)), ("data",))

    def sharding(self, axis):
        if self.mesh is None:
            return None
        return NamedSharding(self.mesh, PartitionSpec(*([None] * axis), "data"))

    def __call__(self, a, what, axis):
        if self.mesh is None:
            return a
        count = self.mesh.devices.size
        if a.shape[axis] % count:
            raise ValueError(
                f"devices: {what} = {a.shape[axis]} must be divisible by the {count} devices"
            )
        return jax.device_put(a, self.sharding(axis))


# Step cap of the exact code solves of the stopping test, the final codes and the report.
_CODE_MAX_STEPS = 5000


def _exact_codes(X, D, lam, code_tol, solver):
    return solve_codes(X, D, lam, solver=solver, tol=code_tol, max_steps=_CODE_MAX_STEPS).codes


def _report(X, D, lam, code_tol, solver, second_order=True):
    """The optimality report of D with exact codes of `X`."""
    codes = _exact_codes(X, D, lam, code_tol, solver)
    weights = jnp.ones(X.shape[0], X.dtype)
    return report(X, D, codes, lam, weights, None, second_order)


def _certifier(X_eval, lam, tol, code_tol, solver):
    """The stopping test: first-order certified residuals of D with exact codes on `X_eval`."""

    def certify(D):
        first_order = _report(X_eval, D, lam, code_tol, solver, second_order=False)
        worst = float(first_order.stationary_residual)
        return worst <= tol, worst

    return certify


def _final_report(X, D, lam, code_tol, solver, eval_size):
    """The full report (second-order tests included) on the first `eval_size` signals."""
    return _report(X[:eval_size], D, lam, code_tol, solver)


class _Loop(NamedTuple):
    """The user's loop options, shared by `learn_dictionary` and `train_sae`."""

    max_steps: int
    chunk_size: int
    checkpoint: str | None
    verbose: bool
    progress: ProgressCallback | None


def _train(run_chunk, certify_state, state, feed, loop: _Loop, name, run, data):
    """Opens `feed` and runs the chunks until certified (`run_chunks`); (state, history, done)."""
    with feed:
        return run_chunks(
            run_chunk,
            certify_state,
            state,
            **loop._asdict(),
            name=name,
            run=run,
            scale=data.exponent,
        )


def learn_dictionary(
    X: Float[ArrayLike, "n d"] | str | list[str] | streaming.SignalSource,
    k: int,
    lam: float,
    *,
    method: str = "alternating",
    seed: int = 0,
    init: Float[ArrayLike, "k d"] | None = None,
    max_steps: int = 500,
    chunk_size: int = 10,
    stationarity_tol: float | None = None,
    code_tol: float | None = None,
    batch_size: int = 256,
    forgetting: float = 3.0,
    code_steps: int | None = 40,
    revive: bool = True,
    solver: str = "active_set",
    eval_size: int = 2048,
    checkpoint: str | None = None,
    shuffle: streaming.Shuffle | None = None,
    shuffle_seed: int = 0,
    prefetch: int = 2,
    verbose: bool = False,
    progress: ProgressCallback | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> LearnedDictionary:
    r"""Learn a unit-norm dictionary for $F(D, A) = \frac1n\sum_i \tfrac12\|x_i - a_iD\|^2 +
    \lambda\|a_i\|_1$.

    Arguments:
        X: training signals (n, d): an array, or streamed input (`method="online"`): the path of
            a `.npy` file, a list or glob of `.npz`/`.safetensors` shards, a memory map or a
            `sparsedict.streaming.SignalSource` (see the streaming guide).
            `method="alternating"` reads streamed input whole into memory.
        k: number of atoms. lam: the L1 penalty (> 0).
        method: `"alternating"` (exact codes + exact block-coordinate atom updates on all data) or
            `"online"` (Mairal et al. minibatch learning with forgetting).
        seed: the initial atoms: `k` distinct signals drawn by `numpy.random.default_rng(seed)`,
            normalised (the same for both methods, for `train_sae` and for a width sweep's member
            with this seed), unless `init` ((k, d), normalised) is given.
        max_steps: cap on training steps (one step = one pass of codes + atoms, or one minibatch;
            >= 1). Steps run in whole chunks, so a run may take up to `chunk_size - 1` more.
        chunk_size: steps per compiled chunk (>= 1); progress, checkpoints and the stopping test
            run between chunks.
        stationarity_tol: stop once the certified residual (largest `|s_k/m_k - lam d_k| / lam` and
            KKT residual / lam, THEORY 2.2, with exact codes) is below it (default 1e-8 float64,
            1e-4 float32).
        code_tol: relative duality-gap tolerance of the code solves.
        batch_size, forgetting: minibatch size and forgetting exponent rho (online): the
            statistics decay by (1 - 1/t)^rho per step, so early codes (computed with a poor
            dictionary) are forgotten; rho = 3 worked best in our tests (rho = 1 stalled 8% above
            the alternating optimum on the recovery problem of tests/test_learning.py).
        code_steps: (online) FISTA steps per minibatch code solve (>= 1; each solve also
            stops where its relative gap reaches `code_tol`), or None for certified minibatch
            codes with `solver`. The statistics need approximate codes only (as in Mairal et al.
            2010), and the certified solve took almost all of a step: 40 steps made the steps of
            the image-patch benchmark about 3x cheaper at the same or lower held-out objective
            per step (issue 16; `sparsedict/_learning/_online.py`). The stopping test, the
            returned codes and the report always use certified codes with `solver`.
        revive: revive dead atoms along the free-atom direction (THEORY section 3).
        eval_size: signals of the final report (and of the online stopping test; the
            alternating method's stopping test, first order only, uses all data). For streamed
            input the returned `codes` and `objective` are those of these first `eval_size`
            signals too; for an in-memory array they cover all signals.
        checkpoint: path of an `.npz` file: saved (atomically) after each chunk, resumed from if
            present. It records what defines the run (learner and options, k, lam, seeds, init,
            dtype, code_tol and a fingerprint of the data: shape, dtype, hash of sampled rows);
            resuming a different run raises `RunMismatch` naming what differs, and a damaged file
            is ignored with a warning (the run starts again). The minibatches depend on
            `(shuffle_seed, step)` only, so a resumed run ends as an uninterrupted one.
            `max_steps` and `stationarity_tol` may change between resumes.
        shuffle: the online minibatch order (default `Shuffle()`: a uniform permutation per epoch
            up to 65,536 signals, block-wise beyond).
        shuffle_seed: the seed of that order (the same for every `seed`, as in a width sweep,
            whose members share one minibatch stream).
        prefetch: chunks of minibatches read ahead in a background thread (0: none).
        verbose: show progress on stderr (one line per chunk).
        progress: called after each chunk with a [`Progress`][sparsedict.Progress] record
            (steps done, `max_steps`, objective, L0, dead atoms, gradient norm), e.g. to drive a
            tqdm bar or log to Weights & Biases. Progress also goes to the `"sparsedict"` logger.
        devices: train data-parallel over these devices (e.g. `jax.devices()`): the signals
            (alternating) or each minibatch (online) are split over them, the dictionary is
            replicated and the sufficient statistics are all-reduced by the compiler; the result
            equals the single-device one up to the order of floating-point sums. n (alternating)
            or batch_size (online) must be divisible by the number of devices.

    The online minibatches come from `sparsedict.streaming.Minibatches` for
    in-memory and streamed input alike (the same seed gives the same result from an array and
    from a file holding it); every signal is used once per epoch.

    Data, dtype and scale (one policy for every learner and sweep, `sparsedict/_learning/_data.py`):
    half-precision data trains in float32; the signals and `lam` are multiplied by a power of two
    $2^{-e}$ that brings the largest sampled |x| into [1/2, 1) (exact; the dictionary is
    unchanged and codes, objectives and the history are returned at the data's scale), and data
    whose squares would underflow or overflow the dtype is refused.
    """
    if method not in ("alternating", "online"):
        raise ValueError(f"method must be 'alternating' or 'online', got {method!r}")
    k = check.positive_int(k, "k")
    lam = _positive_lam(lam)
    _loop_settings(max_steps, chunk_size, eval_size, seed, shuffle_seed, prefetch)
    check.int_at_least(batch_size, "batch_size")
    forgetting = _nonnegative_float(forgetting, "forgetting")
    if code_steps is not None:
        code_steps = check.int_at_least(
            code_steps, "code_steps (FISTA steps per minibatch code solve)"
        )
    split = _data_parallel(devices)
    data = _data.TrainingData(X)
    dtype, full = data.dtype, method == "alternating"
    # the scaled problem (see `_data.py`): X 2^-e, lam 2^-e; D unchanged. X_s: the signals the
    # result describes (all of an in-memory array, the first `eval_size` of a stream)
    X_s = _described_rows(data, X, full, eval_size)
    lam_s = jnp.ldexp(jnp.asarray(lam, dtype), -data.exponent)
    D0 = _initial_dictionary(data, init, k, seed)
    code_tol, stationarity_tol = _tolerances(dtype, code_tol, stationarity_tol)
    tol = jnp.asarray(code_tol, dtype)
    certify = _certifier(
        X_s if full else X_s[:eval_size], lam_s, stationarity_tol, code_tol, solver
    )

    def certify_state(state):
        done, worst = certify(state.D)
        return done, f"stationarity={worst:.2e}"

    if full:
        learner = Alternating(solver=solver, revive=revive)
        feed = contextlib.nullcontext()

        X_train = split(X_s, "the number of signals n", 0)

        def run_chunk(state):
            return _full_data_chunk(learner, X_train, lam_s, tol, state, chunk_size)
    else:
        # The statistics' age is capped at half an epoch (see `Online`; issue 16).
        memory = data.n / 2
        learner = Online(
            solver=solver,
            forgetting=forgetting,
            revive=revive,
            memory=memory,
            code_steps=code_steps,
        )
        feed = _feed(
            data, batch_size, shuffle_seed, chunk_size, max_steps, shuffle, prefetch, split
        )

        def run_chunk(state):
            return _minibatch_chunk(learner, lam_s, tol, state, feed(int(state.step)))

    run = dict(
        entry="learn_dictionary",
        learner=_options(learner),
        k=k,
        lam=lam,
        seed=seed,
        init=None if init is None else _array_hash(D0),
        data=data.fingerprint,
        dtype=str(dtype),
        code_tol=float(code_tol),
    )
    if not full:
        run.update(
            batch_size=int(batch_size),
            shuffle_seed=shuffle_seed,
            shuffle=_options(shuffle or streaming.Shuffle()),
        )
    state = learner.init(X_s, D0)
    if full:
        state = state._replace(codes=split(state.codes, "the number of signals n", 0))
    loop = _Loop(max_steps, chunk_size, checkpoint, verbose, progress)
    name = f"learn_dictionary[{method}]"
    state, history, done = _train(run_chunk, certify_state, state, feed, loop, name, run, data)
    D = state.D
    codes = _exact_codes(X_s, D, lam_s, code_tol, solver)
    X_user = data.unscale(X_s)  # exact: the data as given (in the training dtype)
    return LearnedDictionary(
        dictionary=D,
        codes=data.unscale(codes),
        objective=data.unscale(mean_objective(X_s, D, codes, lam_s), 2),
        history=_unscaled_history(history, data),
        report=_final_report(X_user, D, jnp.asarray(lam, dtype), code_tol, solver, eval_size),
        converged=bool(done),
        steps=int(state.step),
    )


def train_sae(
    X: Float[ArrayLike, "n d"] | str | list[str] | streaming.SignalSource,
    k: int,
    lam: float,
    *,
    seed: int = 0,
    max_steps: int = 2000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    norm: str = "unit",
    decoder_bias: bool = False,
    chunk_size: int = 100,
    solver: str = "active_set",
    stationarity_tol: float | None = None,
    code_tol: float | None = None,
    **run_options,
) -> TrainedSAE:
    r"""Train a vanilla ReLU SAE with optax and analyse its decoder with exact codes.

    The encoder $a = \mathrm{relu}(W_{enc}(x - b_{dec}) + b_{enc})$ is trained with `optimizer`
    (default Adam at `learning_rate`) on minibatches; `norm="unit"` keeps decoder rows on the
    sphere (tangent-projected gradients, renormalised each step), `norm="weighted"` uses the
    decoder-norm-weighted L1. `solver` codes the decoder exactly (stopping test and analysis).
    Training stops after `max_steps` or when the decoder's certified
    stationarity residual (exact codes, on up to `eval_size` signals) is below
    `stationarity_tol`. The result reports the amortisation gap: the objective with encoder codes
    minus the objective with exact codes for the same decoder.

    `decoder_bias=True` trains $b_{dec}$, initialised at the geometric median of the first
    `eval_size` signals (as sparsify and dictionary_learning do); the initial atoms are then
    drawn signals minus that median. With `decoder_bias=False`, $b_{dec} = 0$.

    `X`, `seed` and the run options `eval_size`, `checkpoint`, `shuffle`, `shuffle_seed`,
    `prefetch`, `verbose`, `progress` and `devices` (keywords, with the same defaults; each
    minibatch split over the devices, the SAE replicated, gradients all-reduced) are as in
    [`learn_dictionary`][sparsedict.learn_dictionary] (online): `X` may be streamed (a path, shards
    or a source), and the codes, objectives and amortisation gap are then those of the first
    `eval_size` signals.
    """
    opts = SimpleNamespace(**check.forwarded_options(run_options, _RUN_DEFAULTS, "train_sae"))
    eval_size, shuffle, shuffle_seed = opts.eval_size, opts.shuffle, opts.shuffle_seed
    k = check.positive_int(k, "k")
    lam = _positive_lam(lam)
    _loop_settings(max_steps, chunk_size, eval_size, seed, shuffle_seed, opts.prefetch)
    check.int_at_least(batch_size, "batch_size")
    learning_rate = _nonnegative_float(learning_rate, "learning_rate")
    data = _data.TrainingData(X)
    dtype = data.dtype
    X_s = _described_rows(data, X, False, eval_size)  # scaled: X 2^-e (see `_data.py`)
    X_eval = X_s[:eval_size]
    lam_s = jnp.ldexp(jnp.asarray(lam, dtype), -data.exponent)
    code_tol, stationarity_tol = _tolerances(dtype, code_tol, stationarity_tol)
    custom = optimizer is not None
    optimizer = _adam(learning_rate) if optimizer is None else optimizer
    trainer = SAETrainer(optimizer=optimizer, norm=norm, decoder_bias=decoder_bias)
    state = trainer.init(X_eval, _initial_dictionary(data, None, k, seed))
    if decoder_bias:  # the atoms start from signals centred on the initial decoder bias
        D0 = _initial_dictionary(data, None, k, seed, center=np.asarray(state.sae.b_dec))
        state = trainer.init(X_eval, D0)
    feed = _feed(
        data,
        batch_size,
        shuffle_seed,
        chunk_size,
        max_steps,
        shuffle,
        opts.prefetch,
        _data_parallel(opts.devices),
    )
    certify = _certifier(X_eval, lam_s, stationarity_tol, code_tol, solver)
    tol = jnp.asarray(code_tol, dtype)

    def run_chunk(state):
        return _minibatch_chunk(trainer, lam_s, tol, state, feed(int(state.step)))

    def certify_state(state):
        D, _ = state.sae.dictionary_and_codes(X_s[:1])
        done, worst = certify(D)
        return done, f"stationarity={worst:.2e}"

    run = dict(
        entry="train_sae",
        learner=_options(trainer),
        optimizer="custom" if custom else f"adam(learning_rate={learning_rate!r})",
        k=k,
        lam=lam,
        seed=seed,
        data=data.fingerprint,
        dtype=str(dtype),
        batch_size=int(batch_size),
        shuffle_seed=shuffle_seed,
        shuffle=_options(shuffle or streaming.Shuffle()),
    )
    loop = _Loop(max_steps, chunk_size, opts.checkpoint, opts.verbose, opts.progress)
    state, history, done = _train(
        run_chunk, certify_state, state, feed, loop, "train_sae", run, data
    )
    sae = state.sae
    # back at the data's scale: the biases scale with the signals, the weights do not
    sae = eqx.tree_at(
        lambda s: (s.b_enc, s.b_dec), sae, (data.unscale(sae.b_enc), data.unscale(sae.b_dec))
    )
    X = data.unscale(X_s)
    lam = jnp.asarray(lam, dtype)
    centered = sae.center(X)
    D, encoder_codes = sae.dictionary_and_codes(X)
    codes = _exact_codes(centered, D, lam, code_tol, solver)
    exact = mean_objective(centered, D, codes, lam)
    encoder = mean_objective(centered, D, encoder_codes, lam)
    return TrainedSAE(
        dictionary=D,
        codes=codes,
        objective=exact,
        history=_unscaled_history(history, data),
        report=_final_report(centered, D, lam, code_tol, solver, eval_size),
        converged=bool(done),
        steps=int(state.step),
        sae=sae,
        encoder_objective=encoder,
        amortisation_gap=encoder - exact,
    )


# the run options train_sae forwards: learn_dictionary's signature is their one home
_RUN_OPTIONS = (
    "eval_size",
    "checkpoint",
    "shuffle",
    "shuffle_seed",
    "prefetch",
    "verbose",
    "progress",
    "devices",
)
_RUN_DEFAULTS = check.keyword_defaults(learn_dictionary, _RUN_OPTIONS)
