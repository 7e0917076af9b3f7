r"""Certify a dictionary over chunks of signals: memory holds one chunk's codes, never n x k x d.

**First order** (THEORY 1-3). Each chunk of signals is coded exactly and only sums leave it: the
per-atom sums $s_k = \sum_i a_{ik} r_i$, masses $m_k = \sum_i a_{ik}$, $\sum_i a_{ik}^2$ (for
the 2.3 alignment), the usage counts, the objective, the per-signal KKT residuals and gaps, and
the largest residual (free-atom test). The report is the in-memory
[`residuals`][sparsedict.optimality.residuals]`(..., second_order=False)` (unit weights).

**Second order, matrix-free** (THEORY 4.1). $\lambda_{\max}(P_k C_k P_k)$ with
$C_k = \sum_{i \in \mathcal A_k} e_{ik} e_{ik}^\top$ needs only products: for a tangent $u$
($u \perp d_k$), $e_{ik}\cdot u = r_i \cdot u$, so $P_k C_k P_k u = P_k \sum_{i \in \mathcal A_k}
(r_i \cdot u)\, r_i$, a sum over the active pairs $(i, k)$ alone. The residuals (n, d) and the
active pairs are kept from the first pass; a block power (subspace) iteration with `block`
vectors per atom and a final Rayleigh-Ritz step gives the top eigenvalue of every atom at once.

**Splitting slope, matrix-free** (THEORY 4.2): the same kept residuals and the positive codes
$a_{ik}$ give $S_k$ through segment sums over the pairs (`_split_matrix_free`).

**Weights.** With per-signal weights $w_i$ every sum above carries $w_i$ (THEORY 0); the report
equals the in-memory `residuals(..., weights=w)`.
"""

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .. import _validation as check
from .._coding._driver import sparse_code
from .._objective import certificate, kkt_residual, residual
from .._progress import ProgressCallback, tenths
from ._first_order import residuals_from_sums
from ._report import FreeAtom, OptimalityReport, SignalResiduals
from ._second_order import _KINK_EPS
from ._split_matrix_free import splitting_from_pairs


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Predicted peak memory of a chunked certify, in bytes, by part."""

    chunk_codes: int
    residuals: int
    active_pairs: int
    atoms: int

    @property
    def total(self) -> int:
        return self.chunk_codes + self.residuals + self.active_pairs + self.atoms

    def __str__(self) -> str:
        g = 2.0**30
        return (
            f"predicted peak {self.total / g:.2f} GiB (chunk codes {self.chunk_codes / g:.2f}, "
            f"residuals {self.residuals / g:.2f}, active pairs {self.active_pairs / g:.2f}, "
            f"atoms {self.atoms / g:.2f})"
        )


def plan_certify(n, d, k, *, chunk_size, itemsize=8, mean_l0=64, second_order=True, block=4):
    """The memory a chunked certify needs: the largest arrays alive at once (a chunk's codes and
    correlations, the active-set factors of `min(k, d + 1)` slots per signal, the Gram matrix, the
    kept residuals and active pairs). The runtime itself (about 0.5 GiB for Python and JAX on a
    CPU) and compilation scratch are not included."""
    support = min(k, d + 1)
    chunk = chunk_size * (4 * k + d + support * support) * itemsize
    res = n * d * itemsize if second_order else 0
    # active pairs (csr: index + value) and the positive codes, plus the splitting test's pairs
    pairs = n * mean_l0 * (3 * 16 + 8) if second_order else 0
    # a block of pairs: the block test's products, and the splitting test's gathered blocks and
    # per-pair terms (pair_block x d x block each)
    pair_block = 16384 * d * (2 * block + 1) * itemsize if second_order else 0
    atoms = k * d * itemsize * (6 + (3 * block if second_order else 0))
    atoms += 2 * k * k * itemsize  # the Gram matrix of the active-set solver, and a copy
    return MemoryPlan(chunk, res, pairs + pair_block, atoms)


@eqx.filter_jit
def _chunk_sums(X, D, codes, lam, w, valid, kink_level):
    r"""What one chunk contributes: per-atom weighted sums ($s_k = \sum_i w_i a_{ik} r_i$,
    $m_k = \sum_i w_i a_{ik}$, $\sum_i w_i a_{ik}^2$, $\sum_i w_i p_i$ of the primals),
    per-signal certificates, the active pairs. Padded rows have `valid = False` and `w = 0`."""
    codes = jnp.where(valid[:, None], codes, 0.0)
    R = residual(X, D, codes)
    corr = R @ D.T
    cert = certificate(X, D, codes, lam)
    active = ((codes > 0) | (corr >= kink_level)) & valid[:, None]
    return dict(
        s=codes.T @ (w[:, None] * R),
        mass=w @ codes,
        sumsq=w @ (codes * codes),
        usage=jnp.sum(codes > 0, axis=0),
        weighted_primal=jnp.sum(w * jnp.where(valid, cert.primal, 0.0)),
        codes=codes,
        kkt=kkt_residual(codes, corr, lam),
        gap=cert.gap,
        relative_gap=cert.relative_gap,
        primal=cert.primal,
        residual_norm=jnp.linalg.norm(R, axis=-1),
        R=R,
        active=active,
        l0=jnp.sum(codes > 0, axis=-1),
    )


_FALLBACK_ROWS = 64


def _resolve_unconverged(rows, D, lam, result, fallback, tol, max_steps):
    """Codes of a chunk, with the unconverged signals re-solved by `fallback` in fixed blocks."""
    bad = np.flatnonzero(~np.asarray(result.converged))
    if fallback is None or bad.size == 0:
        return result.codes
    codes = np.array(result.codes)
    for start in range(0, bad.size, _FALLBACK_ROWS):
        idx = bad[start : start + _FALLBACK_ROWS]
        buf = np.zeros((_FALLBACK_ROWS, rows.shape[1]), rows.dtype)
        init = np.zeros((_FALLBACK_ROWS, codes.shape[1]), codes.dtype)
        buf[: idx.size], init[: idx.size] = rows[idx], codes[idx]
        again = sparse_code(buf, D, lam, solver=fallback, tol=tol, max_steps=max_steps, init=init)
        codes[idx] = np.asarray(again.codes)[: idx.size]
    return jnp.asarray(codes)


def _rows(X, start, stop, dtype):
    return np.asarray(check.as_array(X[start:stop], "X"), dtype=dtype)


def _weight_rows(weights, start, stop, dtype):
    """Weights of rows `start:stop` (ones when `weights` is None), refused unless finite, >= 0."""
    if weights is None:
        return np.ones(stop - start, dtype)
    w = np.asarray(check.as_array(weights[start:stop], "weights"), dtype=dtype)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite (rows {start}-{stop - 1} are not)")
    if np.any(w < 0):
        raise ValueError(f"weights must be nonnegative (rows {start}-{stop - 1} are not)")
    return w


@dataclasses.dataclass
class ChunkedCertificate:
    r"""The report (as `residuals(..., second_order=...)`), plus what the chunks saw: `usage`
    (signals using each atom, for L0 and unused atoms), `l0` per signal, `sumsq`
    ($\sum_i w_i a_{ik}^2$), and, when asked, what the matrix-free second-order tests run on:
    the residuals (n, d), the active pairs (block test, kink points included), the positive
    codes (splitting test) and the weights (n,)."""

    report: OptimalityReport
    usage: np.ndarray
    l0: np.ndarray
    sumsq: np.ndarray
    residuals: np.ndarray | None = None
    active: sp.csr_matrix | None = None
    codes: sp.csr_matrix | None = None
    weights: np.ndarray | None = None
    seconds: float = 0.0


def certify_chunked(
    X,
    D,
    lam,
    *,
    center=None,
    weights=None,
    chunk_size: int = 1024,
    keep_residuals: bool = False,
    second_order: bool = False,
    atoms=None,
    iterations: int = 60,
    solver="active_set",
    tol: float | None = None,
    max_steps: int = 1000,
    memory_limit: float | None = None,
    progress: ProgressCallback | None = None,
    fallback="active_set",
    fallback_steps: int = 20000,
) -> ChunkedCertificate:
    r"""Certificate of unit-norm atoms `D` (k, d) on signals `X` (n, d), by chunks: first order,
    and with `second_order` the matrix-free block and splitting tests (THEORY 4.1, 4.2).

    Arguments:
        X: an array (numpy, JAX, torch, a list) or anything sliceable by rows (a memory-mapped
            `.npy`, `np.load(mmap_mode="r")`); rows are read one chunk at a time and cast to the
            dtype of `D` (float32 for a float16/bfloat16 `D`).
        D: unit-norm atoms (k, d). lam: scalar > 0. center: optional (d,) subtracted from every
            signal (an SAE's `b_dec`).
        weights: optional per-signal weights (n,) $w_i \ge 0$ (finite, positive sum), an array
            or anything sliceable by rows like `X` (read chunk by chunk); default 1 each. The
            report is then that of `residuals(..., weights=weights)`.
        chunk_size: signals coded at once; the last chunk is padded with zero signals (zero codes,
            no contribution) so every chunk shares one compiled program.
        keep_residuals: keep the residuals (n, d) and the active pairs for
            `block_ratio_matrix_free` and `splitting_matrix_free`.
        second_order: keep them and run both (on every atom, or on `atoms` only, NaN elsewhere;
            `iterations` subspace-iteration steps each), filling the report's `block_ratio`,
            `split_strength` and `split_direction`.
        solver: as in `sparse_code` (a name or an instance, e.g. `ActiveSet(max_support=64)`:
            a signal whose support does not fit is reported with its true gap, not hidden).
        fallback: the solver that re-solves, warm-started, the signals `solver` left unconverged
            (an active set whose support buffer is too small), `_FALLBACK_ROWS` at a time: by
            default the active set with its full buffer, whose codes have exact zeros (the
            block test counts every positive code as active); None keeps them as they are
            (their gaps say how far they are).
        memory_limit: bytes; refuse before starting when `plan_certify` predicts more.
        progress: called with a [`Progress`][sparsedict.Progress] record (task `"exact codes"`,
            signals done of n) after each chunk; the `"sparsedict"` logger gets each chunk at
            DEBUG and each tenth of the pass at INFO.
    """
    t0 = time.perf_counter()
    if isinstance(X, (list, tuple)):
        X = check.as_array(X, "X")
    dtype = check.float_dtype(("D", D))
    D = jnp.asarray(check.as_array(D, "D"), dtype)
    k, d = D.shape
    n = X.shape[0]
    if X.shape[1] != d:
        raise ValueError(f"X has {X.shape[1]} features but D has {d}")
    if weights is not None:
        if isinstance(weights, (list, tuple)):
            weights = check.as_array(weights, "weights")
        if tuple(weights.shape) != (n,):
            raise ValueError(
                f"weights must have one value per signal, shape ({n},), got {tuple(weights.shape)}"
            )
    keep_residuals = keep_residuals or second_order
    if memory_limit is not None:
        plan = plan_certify(
            n, d, k, chunk_size=chunk_size, itemsize=dtype.itemsize, second_order=keep_residuals
        )
        if plan.total > memory_limit:
            raise MemoryError(
                f"certify would need {plan}, above the limit of {memory_limit / 2**30:.2f} GiB; "
                "lower chunk_size, or skip the second-order tests"
            )
    center = None if center is None else np.asarray(check.as_array(center, "center"), dtype)
    lam_arr = jnp.asarray(check.as_array(lam, "lam"), dtype)
    # The kink level of the block test is set by the largest signal norm (one cheap pass, which
    # also checks the weights before any coding).
    scale, W = 0.0, 0.0
    for start in range(0, n, chunk_size):
        rows = _rows(X, start, min(n, start + chunk_size), dtype)
        W += float(np.sum(_weight_rows(weights, start, min(n, start + chunk_size), dtype)))
        if center is not None:
            rows = rows - center
        scale = max(scale, float(np.max(np.linalg.norm(rows, axis=1), initial=0.0)))
    if not W > 0:
        raise ValueError("weights must have a positive sum")
    kink_level = lam_arr - _KINK_EPS * jnp.finfo(dtype).eps * scale
    coded = tenths(progress, "exact codes")

    acc = {key: 0.0 for key in ("s", "mass", "sumsq", "usage", "weighted_primal")}
    signal_keys = ("kkt", "gap", "relative_gap", "primal", "residual_norm")
    per_signal: dict[str, list] = {key: [] for key in signal_keys}
    l0, res_parts, act_parts, code_parts, weight_parts = [], [], [], [], []
    best_norm, best_signal, best_residual, best_weight = -1.0, 0, np.zeros(d, dtype), 0.0
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        rows = _rows(X, start, stop, dtype)
        if center is not None:
            rows = rows - center
        pad = chunk_size - (stop - start)
        if pad:
            rows = np.concatenate([rows, np.zeros((pad, d), dtype)])
        valid = jnp.arange(chunk_size) < (stop - start)
        w = np.zeros(chunk_size, dtype)
        w[: stop - start] = _weight_rows(weights, start, stop, dtype)
        result = sparse_code(rows, D, lam_arr, solver=solver, tol=tol, max_steps=max_steps)
        codes = _resolve_unconverged(rows, D, lam_arr, result, fallback, tol, fallback_steps)
        out = _chunk_sums(jnp.asarray(rows), D, codes, lam_arr, jnp.asarray(w), valid, kink_level)
        m = stop - start
        for key in acc:
            acc[key] = acc[key] + np.asarray(out[key])
        for key in per_signal:
            per_signal[key].append(np.asarray(out[key])[:m])
        l0.append(np.asarray(out["l0"])[:m])
        # the free-atom test looks at signals of positive weight only (as `free_atom`)
        norms = np.where(w[:m] > 0, per_signal["residual_norm"][-1], 0.0)
        j = int(np.argmax(norms))
        if norms[j] > best_norm:
            best_norm, best_signal, best_weight = float(norms[j]), start + j, float(w[j])
            best_residual = np.asarray(out["R"])[j]
        if keep_residuals:
            res_parts.append(np.asarray(out["R"])[:m])
            act_parts.append(sp.csr_matrix(np.asarray(out["active"])[:m]))
            code_parts.append(sp.csr_matrix(np.asarray(out["codes"])[:m]))
            weight_parts.append(w[:m])
        coded(stop, n)

    lam_f = float(lam)
    atom_report = jax.tree_util.tree_map(
        np.asarray,
        residuals_from_sums(
            jnp.asarray(D),
            jnp.asarray(acc["s"]),
            jnp.asarray(acc["mass"]),
            jnp.asarray(acc["sumsq"]),
            lam_f,
            W,
            jnp.ones(k, bool),
        ),
    )
    signals = SignalResiduals(**{key: np.concatenate(v) for key, v in per_signal.items()})
    direction = best_residual / best_norm if best_norm > 0 else np.zeros(d, dtype)
    free = FreeAtom(
        ratio=np.asarray(best_norm / lam_f),
        signal=np.asarray(best_signal),
        direction=direction,
        slope=np.asarray(best_weight * (lam_f - best_norm) / W),
    )
    report = OptimalityReport(
        objective=np.asarray(acc["weighted_primal"] / W),
        lam=np.asarray(lam_f),
        signals=signals,
        atoms=atom_report,
        free_atom=free,
    )
    cert = ChunkedCertificate(
        report=report,
        usage=np.asarray(acc["usage"]).astype(np.int64),
        l0=np.concatenate(l0),
        sumsq=np.asarray(acc["sumsq"]),
        residuals=np.concatenate(res_parts) if keep_residuals else None,
        active=sp.vstack(act_parts).tocsr() if keep_residuals else None,
        codes=sp.vstack(code_parts).tocsr() if keep_residuals else None,
        weights=np.concatenate(weight_parts) if keep_residuals else None,
    )
    if second_order:
        cert = with_second_order(
            cert, D, lam_f, atoms=atoms, iterations=iterations, progress=progress
        )
    return dataclasses.replace(cert, seconds=time.perf_counter() - t0)


def with_second_order(cert: ChunkedCertificate, D, lam, *, atoms=None, iterations=60, **kw):
    """`cert` with its report's `block_ratio`, `split_strength` and `split_direction` filled by
    `block_ratio_matrix_free` and `splitting_matrix_free` (NaN on atoms outside `atoms`); `kw`
    (block, seed, pair_block, progress) goes to both."""
    ratio, _ = block_ratio_matrix_free(cert, D, lam, atoms=atoms, iterations=iterations, **kw)
    strength, direction = splitting_matrix_free(cert, D, atoms=atoms, iterations=iterations, **kw)
    atoms_report = dataclasses.replace(
        cert.report.atoms, block_ratio=ratio, split_strength=strength, split_direction=direction
    )
    return dataclasses.replace(cert, report=dataclasses.replace(cert.report, atoms=atoms_report))


def _tangent(Q, D):
    """Project each atom's block (k, d, b) on the tangent space of its atom."""
    return Q - D[:, :, None] * np.einsum("kd,kdb->kb", D, Q)[:, None, :]


def _products(Q, D, R, rows, cols, w, pair_block):
    """`P_k C_k P_k q` for every atom and block column: sums over the active pairs only, the
    pair (i, k) weighted by `w[i]`."""
    Q = _tangent(Q, D)
    k, d, b = Q.shape
    out = np.zeros_like(Q)
    n = R.shape[0]
    for start in range(0, rows.size, pair_block):
        r = rows[start : start + pair_block]
        c = cols[start : start + pair_block]
        g = np.einsum("pd,pdb->pb", R[r], Q[c])  # (pairs, b): r_i . u
        for j in range(b):
            M = sp.csr_matrix((g[:, j] * w[r], (r, c)), shape=(n, k))
            out[:, :, j] += M.T @ R
    return _tangent(out, D)


def block_ratio_matrix_free(
    cert: ChunkedCertificate,
    D,
    lam,
    *,
    atoms=None,
    block: int = 4,
    iterations: int = 60,
    seed: int = 0,
    pair_block: int = 16384,
    progress: ProgressCallback | None = None,
):
    r"""THEORY 4.1's ratio $\lambda_{\max}(P_k C_k P_k) / \mu_k$ for every atom (or `atoms`),
    from the residuals and active pairs of a `certify_chunked(..., keep_residuals=True)`.

    Subspace iteration with `block` tangent vectors per atom, then Rayleigh-Ritz; each iteration
    costs one pass over the active pairs (about $2\,\mathrm{nnz}\, d\, b$ flops), never a
    $d \times d$ matrix per atom. Returns `(ratio (k,), top eigenvalue (k,))`; unused atoms get 0.
    `progress` gets a [`Progress`][sparsedict.Progress] record (task `"block test"`) after each
    iteration, as in `certify_chunked`.
    """
    if cert.residuals is None or cert.active is None:
        raise ValueError("run certify_chunked(..., keep_residuals=True) first")
    D = np.asarray(check.as_array(D, "D"), np.float64)
    R = np.asarray(cert.residuals, np.float64)
    w = np.ones(R.shape[0]) if cert.weights is None else np.asarray(cert.weights, np.float64)
    active = cert.active.tocoo()
    rows, cols = active.row.astype(np.int64), active.col.astype(np.int64)
    chosen = np.arange(D.shape[0]) if atoms is None else np.asarray(atoms)
    keep = np.isin(cols, chosen)
    rows, cols = rows[keep], cols[keep]
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    k, d = D.shape
    b = max(1, min(block, d - 1))
    Q = _tangent(np.random.default_rng(seed).standard_normal((k, d, b)), D)
    Q = np.linalg.qr(Q)[0]
    iterated = tenths(progress, "block test")
    for it in range(iterations):
        Q = np.linalg.qr(_products(Q, D, R, rows, cols, w, pair_block))[0]
        Q = _tangent(Q, D)
        Q = np.linalg.qr(Q)[0]
        iterated(it + 1, iterations + 1)
    AQ = _products(Q, D, R, rows, cols, w, pair_block)
    H = np.einsum("kdb,kdc->kbc", Q, AQ)
    top = np.linalg.eigvalsh(0.5 * (H + np.swapaxes(H, 1, 2)))[:, -1]
    mu = _mu(cert, lam)
    used = mu > 0
    ratio = np.where(used, top / np.where(used, mu, 1.0), 0.0)
    if atoms is not None:
        mask = np.zeros(k, bool)
        mask[chosen] = True
        ratio, top = np.where(mask, ratio, np.nan), np.where(mask, top, np.nan)
    iterated(iterations + 1, iterations + 1)
    return ratio, top


def _mu(cert, lam):
    """$\\mu_k = \\sum_i w_i a_{ik}(a_{ik} + \\lambda) = \\sum_i w_i a_{ik}^2 + \\lambda m_k$."""
    return cert.sumsq + float(lam) * np.asarray(cert.report.atoms.mass)


def splitting_matrix_free(
    cert: ChunkedCertificate,
    D,
    *,
    atoms=None,
    block: int = 4,
    iterations: int = 60,
    seed: int = 0,
    pair_block: int = 16384,
    progress: ProgressCallback | None = None,
):
    r"""THEORY 4.2's splitting strength $S_k$ and direction $u_k$ for every atom (or `atoms`),
    from the residuals, positive codes and weights of a
    `certify_chunked(..., keep_residuals=True)`: the dense `splitting` computed over the pairs
    $(i, k)$ with $a_{ik} > 0$ only (`_split_matrix_free`). Returns `(S (k,), u (k, d))`; atoms
    outside `atoms` get NaN, unused atoms $S_k = 0$ and $u_k = 0$."""
    if cert.residuals is None or cert.codes is None:
        raise ValueError("run certify_chunked(..., keep_residuals=True) first")
    D = np.asarray(check.as_array(D, "D"), cert.residuals.dtype)
    k = D.shape[0]
    codes = cert.codes.tocoo()
    rows, cols = codes.row, codes.col
    w = np.ones(cert.residuals.shape[0]) if cert.weights is None else cert.weights
    c = w[rows] * codes.data
    if atoms is not None:
        keep = np.isin(cols, np.asarray(atoms))
        rows, cols, c = rows[keep], cols[keep], c[keep]
    done = tenths(progress, "splitting test")
    strength, direction = splitting_from_pairs(
        cert.residuals, D, rows, cols, c,
        block=block, iterations=iterations, seed=seed, pair_block=pair_block,
    )  # fmt: skip
    strength, direction = np.asarray(strength), np.asarray(direction)
    if atoms is not None:
        mask = np.zeros(k, bool)
        mask[np.asarray(atoms)] = True
        strength = np.where(mask, strength, np.nan)
        direction = np.where(mask[:, None], direction, np.nan)
    done(1, 1)
    return strength, direction
