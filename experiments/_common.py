"""Shared plumbing of the experiment scripts: arguments, checks, tables, figures."""

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)  # the checks compare residuals at 1e-8 and below

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402, F401  (re-exported for the scripts)
import numpy as np  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(__file__), "results")


class PredictionFailed(AssertionError):
    """A numerical prediction of the theory did not hold."""


class Experiment:
    """Arguments, a list of checked predictions, and the output files of one script."""

    def __init__(self, name, argv, description):
        parser = argparse.ArgumentParser(
            prog=f"python -m experiments.{name}", description=description
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
        mode.add_argument(
            "--full",
            action="store_true",
            help="the sizes of the docstring (the default; exercised by a slow test)",
        )
        parser.add_argument(
            "--out", default=DEFAULT_OUT, help="output folder (default %(default)s)"
        )
        args = parser.parse_args(None if argv is None else [str(a) for a in argv])
        self.name, self.quick, self.out = name, args.quick, str(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.checks = []  # (prediction, measured, ok)
        self.sections = []  # markdown blocks of the results table
        self.start = time.perf_counter()

    def check(self, prediction, measured, ok):
        """Record one prediction; all are reported, then `finish` raises if any failed."""
        self.checks.append((prediction, measured, bool(ok)))
        print(f"[{'ok' if ok else 'FAILED'}] {prediction}: {measured}")

    def table(self, title, header, rows, note=None):
        lines = [
            f"### {title}",
            "",
            "| " + " | ".join(_fmt(h) for h in header) + " |",
            "|" + "---|" * len(header),
        ]
        for row in rows:
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
        if note:
            lines += ["", note]
        self.sections.append("\n".join(lines))

    def savefig(self, fig):
        path = os.path.join(self.out, f"{self.name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=80 if self.quick else 110)
        matplotlib.pyplot.close(fig)
        return path

    def finish(self):
        """Write `NAME.md` (tables and the list of checks); raise if a prediction failed."""
        elapsed = time.perf_counter() - self.start
        mode = "quick" if self.quick else "full"
        checks = [
            "### Predictions checked",
            "",
            "| prediction | measured | holds |",
            "|---|---|---|",
        ]
        checks += [
            f"| {_fmt(p)} | {_fmt(m)} | {'yes' if ok else '**NO**'} |" for p, m, ok in self.checks
        ]
        text = (
            f"## {self.name}\n\n*{mode} run (`python -m "
            f"experiments.{self.name}{' --quick' if self.quick else ''}`), {elapsed:.0f} s*\n\n"
            + "\n\n".join(self.sections + ["\n".join(checks)])
            + "\n"
        )
        path = os.path.join(self.out, f"{self.name}.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path} and {os.path.join(self.out, self.name + '.png')} in {elapsed:.1f} s")
        failed = [p for p, _, ok in self.checks if not ok]
        if failed:
            raise PredictionFailed(f"{self.name}: predictions failed: {failed}")
        return {p: m for p, m, _ in self.checks}


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v).replace("|", "\\|")  # a literal | would end the markdown cell


def unit(M):
    M = np.asarray(M, float)
    return M / np.linalg.norm(M, axis=-1, keepdims=True)


def sweep(X, widths, seeds, lam, steps, stationarity_tol=1e-10):
    """Train every (width, seed) with one vmapped `run_sweep` (one compilation for all widths).

    Returns `(rows, dictionaries)`: the sweep's result rows and `{(width, seed): D}`.
    """
    import tempfile

    import sparsedict as sd

    spec = sd.SweepSpec(
        widths=tuple(widths),
        seeds=tuple(seeds),
        lams=(lam,),
        max_steps=steps,
        buckets="single",
        stationarity_tol=stationarity_tol,
    )
    with tempfile.TemporaryDirectory() as folder:
        rows = sd.run_sweep(X, spec, out=folder, verbose=False).rows
        with np.load(os.path.join(folder, f"bucket_{max(widths)}.npz")) as stored:
            dictionaries = {
                (int(w), int(s)): D[: int(w)]
                for w, s, D in zip(
                    stored["width"], stored["seed"], stored["dictionaries"], strict=False
                )
            }
    return rows, dictionaries


def best_by_width(rows, dictionaries, key="objective"):
    """{width: (row, D)} of the seed with the lowest `key` at each width."""
    best = {}
    for r in rows:
        w = int(r["width"])
        if w not in best or r[key] < best[w][0][key]:
            best[w] = (r, dictionaries[w, int(r["seed"])])
    return best
