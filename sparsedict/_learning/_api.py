"""Public entry points: `learn_dictionary` and `train_sae`."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from .. import _validation as check
from .._coding._driver import default_tol, sparse_code
from ..optimality import OptimalityReport, residuals
from ._alternating import Alternating
from ._atoms import init_dictionary
from ._chunks import scan_full_data, scan_minibatches
from ._loop import run_chunks
from ._metrics import StepInfo, mean_objective
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


def _prepare(X, k, lam, name="X"):
    dtype = check.float_dtype((name, X))
    X = check.signals(X, dtype, name)
    if X.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {X.shape}")
    k = check.positive_int(k, "k")
    lam = check.lam(lam, (), dtype)
    return X, k, lam, dtype


def _batches(n, batch_size, seed):
    """Deterministic stream of minibatch indices: a fresh permutation of the data each epoch."""

    def indices(step, count):
        out = np.empty((count, batch_size), np.int64)
        per_epoch = max(n // batch_size, 1)
        for j in range(count):
            epoch, pos = divmod(step + j, per_epoch)
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            out[j] = np.resize(perm[pos * batch_size : (pos + 1) * batch_size], batch_size)
        return out

    return indices


def _certifier(X_eval, lam, tol, code_tol, solver):
    """The stopping test: first-order certified residuals of D with exact codes on `X_eval`."""

    def certify(D):
        coded = sparse_code(X_eval, D, lam, solver=solver, tol=code_tol, max_steps=5000)
        worst = float(residuals(X_eval, D, coded.codes, lam, second_order=False).stationary_residual)
        return worst <= tol, worst

    return certify


def _final_report(X, D, lam, code_tol, solver, eval_size):
    """The full report (second-order tests included) on the first `eval_size` signals."""
    X_eval = X[:eval_size]
    codes = sparse_code(X_eval, D, lam, solver=solver, tol=code_tol, max_steps=5000).codes
    return residuals(X_eval, D, codes, lam)


def learn_dictionary(
    X: Float[ArrayLike, "n d"],
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
    revive: bool = True,
    solver: str = "active_set",
    eval_size: int = 2048,
    checkpoint: str | None = None,
    verbose: bool = False,
) -> LearnedDictionary:
    r"""Learn a unit-norm dictionary for $F(D, A) = \frac1n\sum_i \tfrac12\|x_i - a_iD\|^2 + \lambda\|a_i\|_1$.

    Arguments:
        X: training signals (n, d) (a numpy array or memory map is streamed for `method="online"`).
        k: number of atoms. lam: the L1 penalty (> 0).
        method: `"alternating"` (exact codes + exact block-coordinate atom updates on all data) or
            `"online"` (Mairal et al. minibatch learning with forgetting).
        seed: initial atoms are `k` random normalised signals drawn with this seed (or `init`).
        max_steps: cap on training steps (one step = one pass of codes + atoms, or one minibatch).
        chunk_size: steps per compiled chunk; progress, checkpoints and the stopping test run
            between chunks.
        stationarity_tol: stop once the certified residual (largest `|s_k/m_k - lam d_k| / lam` and
            KKT residual / lam, THEORY 2.2, with exact codes) is below it (default 1e-8 float64,
            1e-4 float32).
        code_tol: relative duality-gap tolerance of the code solves.
        batch_size, forgetting: minibatch size and forgetting exponent rho (online): the
            statistics decay by (1 - 1/t)^rho per step, so early codes (computed with a poor
            dictionary) are forgotten; rho = 3 worked best in our tests (rho = 1 stalled 8% above
            the alternating optimum on the recovery problem of tests/test_learning.py).
        revive: revive dead atoms along the free-atom direction (THEORY section 3).
        eval_size: signals of the final report (and of the online stopping test; the
            alternating method's stopping test, first order only, uses all data).
        checkpoint: path of an `.npz` file: saved after each chunk, resumed from if present.
        verbose: print progress to stderr.
    """
    if method not in ("alternating", "online"):
        raise ValueError(f"method must be 'alternating' or 'online', got {method!r}")
    X_host = X
    X, k, lam, dtype = _prepare(X, k, lam)
    n = X.shape[0]
    code_tol, stationarity_tol = _tolerances(dtype, code_tol, stationarity_tol)
    key = jax.random.PRNGKey(seed)
    D0 = init_dictionary(X, k, key) if init is None else check.dictionary(init, X.shape[1], dtype)[0]
    D0 = D0 / jnp.linalg.norm(D0, axis=-1, keepdims=True)
    tol = jnp.asarray(code_tol, dtype)
    certify = _certifier(X if method == "alternating" else X[:eval_size], lam, stationarity_tol, code_tol, solver)

    def certify_state(state):
        done, worst = certify(state.D)
        return done, f"stationarity={worst:.2e}"

    if method == "alternating":
        learner = Alternating(solver=solver, revive=revive)

        def run_chunk(state):
            return _full_data_chunk(learner, X, lam, tol, state, chunk_size)
    else:
        learner = Online(solver=solver, forgetting=forgetting, revive=revive)
        stream = _batches(n, min(batch_size, n), seed)
        X_np = np.asarray(X_host, dtype=dtype)

        def run_chunk(state):
            batches = jnp.asarray(X_np[stream(int(state.step), chunk_size)])
            return _minibatch_chunk(learner, lam, tol, state, batches)

    state, history, done = run_chunks(
        run_chunk, certify_state, learner.init(X, D0), max_steps=max_steps, chunk_size=chunk_size,
        checkpoint=checkpoint, verbose=verbose, name=f"learn_dictionary[{method}]",
    )
    D = state.D
    codes = sparse_code(X, D, lam, solver=solver, tol=code_tol, max_steps=5000).codes
    return LearnedDictionary(
        dictionary=D, codes=codes, objective=mean_objective(X, D, codes, lam), history=history,
        report=_final_report(X, D, lam, code_tol, solver, eval_size), converged=bool(done),
        steps=int(state.step),
    )


def train_sae(
    X: Float[ArrayLike, "n d"],
    k: int,
    lam: float,
    *,
    seed: int = 0,
    steps: int = 2000,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    norm: str = "unit",
    decoder_bias: bool = False,
    chunk_size: int = 100,
    solver: str = "active_set",
    stationarity_tol: float | None = None,
    code_tol: float | None = None,
    eval_size: int = 2048,
    checkpoint: str | None = None,
    verbose: bool = False,
) -> TrainedSAE:
    r"""Train a vanilla ReLU SAE with optax and analyse its decoder with exact codes.

    The encoder $a = \mathrm{relu}(W_{enc}(x - b_{dec}) + b_{enc})$ is trained with `optimizer`
    (default Adam at `learning_rate`) on minibatches; `norm="unit"` keeps decoder rows on the
    sphere (tangent-projected gradients, renormalised each step), `norm="weighted"` uses the
    decoder-norm-weighted L1. `solver` codes the decoder exactly (stopping test and analysis).
    Training stops after `steps` or when the decoder's certified
    stationarity residual (exact codes, on up to `eval_size` signals) is below
    `stationarity_tol`. The result reports the amortisation gap: the objective with encoder codes
    minus the objective with exact codes for the same decoder.
    """
    X_host = X
    X, k, lam, dtype = _prepare(X, k, lam)
    n = X.shape[0]
    code_tol, stationarity_tol = _tolerances(dtype, code_tol, stationarity_tol)
    optimizer = _adam(float(learning_rate)) if optimizer is None else optimizer
    trainer = SAETrainer(optimizer=optimizer, norm=norm, decoder_bias=decoder_bias)
    D0 = init_dictionary(X, k, jax.random.PRNGKey(seed))
    stream = _batches(n, min(batch_size, n), seed)
    X_np = np.asarray(X_host, dtype=dtype)
    X_eval = X[: min(eval_size, n)]
    certify = _certifier(X_eval, lam, stationarity_tol, code_tol, solver)
    tol = jnp.asarray(code_tol, dtype)

    def run_chunk(state):
        batches = jnp.asarray(X_np[stream(int(state.step), chunk_size)])
        return _minibatch_chunk(trainer, lam, tol, state, batches)

    def certify_state(state):
        D, _ = state.sae.dictionary_and_codes(X_eval[:1])
        done, worst = certify(D)
        return done, f"stationarity={worst:.2e}"

    state, history, done = run_chunks(
        run_chunk, certify_state, trainer.init(X, D0), max_steps=steps, chunk_size=chunk_size,
        checkpoint=checkpoint, verbose=verbose, name="train_sae",
    )
    sae = state.sae
    centered = X - sae.b_dec
    D, encoder_codes = sae.dictionary_and_codes(X)
    codes = sparse_code(centered, D, lam, solver=solver, tol=code_tol, max_steps=5000).codes
    exact = mean_objective(centered, D, codes, lam)
    encoder = mean_objective(centered, D, encoder_codes, lam)
    return TrainedSAE(
        dictionary=D, codes=codes, objective=exact, history=history,
        report=_final_report(centered, D, lam, code_tol, solver, eval_size),
        converged=bool(done), steps=int(state.step), sae=sae, encoder_objective=encoder,
        amortisation_gap=encoder - exact,
    )
