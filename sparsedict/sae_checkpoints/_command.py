"""`sparsedict certify --sae PATH --data FILE`: the command's logic, as a function with an exit
status (0: done; 1: the worst relative stationarity exceeds `fail_above`; 2: bad input)."""

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from .._coding._active_set import ActiveSet
from ..optimality._chunked import certify_chunked, plan_certify, with_second_order
from ..optimality._report import format_report
from ..streaming import load_array
from ._formats import load_sae
from ._lam_for_l0 import lam_for_l0
from ._metrics import sae_metrics


def open_signals(path):
    """Rows of a `.npy` (memory-mapped: the passes read it chunk by chunk) or of the one (n, d)
    array of a `.npz`/`.safetensors` file (read whole by `sparsedict.streaming.load_array`)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")
    return load_array(path)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if x is None or isinstance(x, str | bool | int):
        return x
    a = np.asarray(x)
    if a.dtype.kind == "b":
        return a.tolist()
    if a.dtype.kind in "iu":
        return a.tolist()
    return np.where(np.isfinite(a), a, None).tolist() if a.ndim else float(a)


def _flat(tree, prefix=""):
    """`{"a": {"b": x}}` as `{"a/b": x}`, leaving out None."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        elif value is not None:
            out[f"{prefix}{key}"] = value
    return out


def write_npz(path, payload) -> None:
    """Every array and summary of `payload` (nested dicts) in one `np.savez` file, keys joined by
    `/` (`"per_atom/mass"`, `"summary/objective"`); strings and scalars as 0-d arrays."""
    np.savez(path, **{key: np.asarray(value) for key, value in _flat(payload).items()})


def report_payload(report) -> dict[str, Any]:
    """Every array of an `OptimalityReport` as nested dicts (`summary`, `per_atom`,
    `per_signal`, `free_atom`), for `write_npz`; second-order fields that were not computed are
    left out."""
    a, sig, fa = report.atoms, report.signals, report.free_atom
    return {
        "lam": report.lam,
        "summary": {
            "objective": report.objective,
            "worst_relative_stationarity": report.stationary_residual,
            "max_kkt": np.max(sig.kkt),
            "max_gap": np.max(sig.gap),
            "free_atom_ratio": fa.ratio,
        },
        "per_atom": {f.name: getattr(a, f.name) for f in dataclasses.fields(a)},
        "per_signal": {f.name: getattr(sig, f.name) for f in dataclasses.fields(sig)},
        "free_atom": {f.name: getattr(fa, f.name) for f in dataclasses.fields(fa)},
    }


def _plot(path, usage, stationarity, block):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    used = usage > 0
    colour = None if block is None else np.where(block[used] > 1, "tab:red", "tab:blue")
    ax.scatter(usage[used], stationarity[used], s=6, c=colour)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-8)
    ax.set_xlabel("signals using the atom (exact codes)")
    ax.set_ylabel("|s_k/m_k - lam d_k| / lam")
    ax.set_title("per-atom stationarity" + ("" if block is None else " (red: saddle)"))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_certify_sae(
    sae_path,
    data_path,
    lam=None,
    target_l0=None,
    json_path=None,
    plot_path=None,
    npz_path=None,
    fail_above=None,
    chunk_size: int = 1024,
    second_order: bool = True,
    atoms=None,
    iterations: int = 60,
    memory_limit: float | None = None,
    scaling_factor: float | None = None,
    l0_sample: int = 4096,
    max_support: int | None = None,
    out=print,
    note=None,
) -> int:
    """Certify an SAE checkpoint on signals; print the convention, report and metrics.

    `out` receives the results and errors, `note` (default: `out`) what is being done (the
    checkpoint read, the centring, the memory plan, the files written); the progress of the
    passes over the data goes to the `"sparsedict"` logger (`sparsedict._progress`).

    `lam` (explicit) wins over `target_l0` (the lam whose exact codes have that mean L0, found
    on the first `l0_sample` signals), which wins over the checkpoint's implied lam. With
    `second_order`, the block and splitting tests (THEORY 4.1, 4.2) run matrix-free on every
    atom, or on `atoms` only (NaN elsewhere in the JSON).
    `max_support` caps the active-set solver's support buffer (default `min(k, d + 1)`): much
    faster for wide SAEs (the signals whose exact support does not fit are re-solved with the
    full buffer). `json_path` gets the summary, per-atom and per-signal arrays; `npz_path` the
    same and the larger arrays (split directions, gradients, the free-atom direction) in one
    `np.savez` file with keys such as `"per_atom/split_strength"` (`write_npz`).
    """
    try:
        sae = load_sae(sae_path, scaling_factor=scaling_factor)
        X = open_signals(data_path)
    except (OSError, ValueError) as e:
        out(f"error: {e}")
        return 2
    if X.ndim != 2 or X.shape[1] != sae.d:
        out(f"error: {data_path} has shape {X.shape}; the SAE expects (n, {sae.d})")
        return 2
    dtype = np.float64 if jax.config.read("jax_enable_x64") else np.float32
    D = sae.D.astype(dtype)
    note = out if note is None else note
    note(f"SAE: {sae.library} {sae.activation}, k = {sae.k}, d = {sae.d}; data: n = {X.shape[0]}")
    if lam is not None:
        convention = f"lam = {lam:g} given on the command line"
    elif target_l0 is not None:
        sample = sae.centre(np.asarray(X[:l0_sample], np.float64)).astype(dtype)
        lam, l0 = lam_for_l0(sample, D, target_l0)
        convention = (
            f"lam = {lam:.6g}: exact codes have mean L0 {l0:.2f} (target {target_l0:g}, "
            f"{sample.shape[0]} signals)"
        )
    elif sae.lam is not None:
        lam, convention = sae.lam, sae.lam_convention
    else:
        out(f"error: {sae.lam_convention}")
        return 2
    out(f"convention: {convention}")
    note("data centred by b_dec" + ("" if np.any(sae.b_dec) else " (b_dec = 0)"))
    plan = plan_certify(
        X.shape[0],
        sae.d,
        sae.k,
        chunk_size=chunk_size,
        itemsize=np.dtype(dtype).itemsize,
        second_order=second_order,
    )
    note(f"memory: {plan}")
    try:
        cert = certify_chunked(
            X,
            D,
            lam,
            center=sae.b_dec.astype(dtype),
            chunk_size=chunk_size,
            keep_residuals=second_order,
            memory_limit=memory_limit,
            solver="active_set" if max_support is None else ActiveSet(max_support=max_support),
        )
    except MemoryError as e:
        out(f"error: {e}")
        return 2
    block = split = None
    if second_order:
        cert = with_second_order(cert, D, lam, atoms=atoms, iterations=iterations)
        block = cert.report.atoms.block_ratio
        split = cert.report.atoms.split_strength
        atoms_report = dataclasses.replace(
            cert.report.atoms, block_ratio=np.nan_to_num(block), split_strength=np.nan_to_num(split)
        )
        cert = dataclasses.replace(
            cert, report=dataclasses.replace(cert.report, atoms=atoms_report)
        )
    report = cert.report
    metrics = sae_metrics(X, sae, lam, cert, chunk_size=chunk_size)
    out(format_report(report))
    worst = float(report.stationary_residual)
    out(
        f"SAE metrics: explained_variance {metrics.explained_variance:.4f} (exact codes "
        f"{metrics.explained_variance_exact:.4f}), mse {metrics.mse:.4g}, cossim "
        f"{metrics.cossim:.4f}, l0 {metrics.l0:.2f} (exact {metrics.l0_exact:.2f}), "
        f"dead_latents {metrics.dead_latents} (encoder), unused_atoms {metrics.unused_atoms} "
        f"(exact codes), amortisation gap {metrics.amortisation_gap:.4g}, |mean residual| "
        f"{metrics.mean_residual_norm:.3g}"
    )
    out(f"worst relative stationarity {worst:.3e}; certify took {cert.seconds:.1f} s")
    if json_path is not None or npz_path is not None:
        a = report.atoms
        payload: dict[str, Any] = {
            "sae": {
                "path": os.fspath(sae_path),
                "library": sae.library,
                "activation": sae.activation,
                "k": sae.k,
                "d": sae.d,
            },
            "lam": float(lam),
            "convention": convention,
            "summary": {
                "objective": float(report.objective),
                "worst_relative_stationarity": worst,
                "max_kkt": float(np.max(report.signals.kkt)),
                "max_gap": float(np.max(report.signals.gap)),
                "free_atom_ratio": float(report.free_atom.ratio),
                "saddles": None if block is None else int(np.sum(np.nan_to_num(block) > 1)),
                "max_split_strength": None if split is None else float(np.nanmax(split)),
                **metrics.summary(),
            },
            "per_atom": {
                "mass": a.mass,
                "relative_constraint": a.relative_constraint,
                "gradient_norm": a.gradient_norm,
                "multiplier": a.multiplier,
                "alignment": a.alignment,
                "unused": a.dead,
                "norm": sae.norms,
                "block_ratio": block,
                "split_strength": split,
                **metrics.per_atom(),
            },
            "per_signal": {
                "gap": report.signals.gap,
                "kkt": report.signals.kkt,
                "amortisation_gap": metrics.amortisation_gap_per_signal,
                "l0_encoder": metrics.l0_per_signal,
                "l0_exact": cert.l0,
            },
            "mean_residual": metrics.mean_residual,
        }
        per_atom: dict = payload["per_atom"]
        payload["per_atom"] = {k: v for k, v in per_atom.items() if v is not None}
        if json_path is not None:
            with open(json_path, "w") as f:
                json.dump(_jsonable(payload), f)
            note(f"wrote {json_path}")
        if npz_path is not None:  # with the arrays too large for the JSON
            payload["per_atom"] |= {"split_direction": a.split_direction, "gradient": a.gradient}
            payload["per_signal"] |= {"relative_gap": report.signals.relative_gap,
                                      "primal": report.signals.primal,
                                      "residual_norm": report.signals.residual_norm}  # fmt: skip
            payload["free_atom"] = {"signal": report.free_atom.signal,
                                    "direction": report.free_atom.direction,
                                    "slope": report.free_atom.slope}  # fmt: skip
            write_npz(npz_path, payload)
            note(f"wrote {npz_path}")
    if plot_path is not None:
        _plot(plot_path, cert.usage, np.asarray(report.atoms.relative_constraint), block)
        note(f"wrote {plot_path}")
    if fail_above is not None and worst > fail_above:
        out(f"FAIL: worst relative stationarity {worst:.3e} > {fail_above:g}")
        return 1
    return 0
