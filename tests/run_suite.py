"""Run the test suite one test file per process, then print the totals.

`python tests/run_suite.py [pytest options]` (for example `-m "not slow"`) runs
`python -m pytest -q <file> [options]` for every `tests/test_*.py` in turn and exits non-zero if
any file failed. Why not one process: in a single long process that has compiled several
hundred programs, XLA:CPU (jaxlib 0.10.2) has crashed with a segmentation fault inside
`backend_compile_and_load`, at different tests from run to run, while every file passes on its
own. One process per file keeps each process short.
"""

import glob
import os
import re
import subprocess
import sys
import time

_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def main(argv: list[str]) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "tests", "test_*.py")))
    totals: dict[str, int] = {}
    failed_files = []
    start = time.perf_counter()
    for path in files:
        name = os.path.relpath(path, root)
        print(f"== {name}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name, *argv],
            cwd=root,
            capture_output=True,
            text=True,
        )
        output = done.stdout + done.stderr
        print(output.rstrip(), flush=True)
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        for count, kind in _COUNT.findall(summary):
            kind = "errors" if kind.startswith("error") else kind
            totals[kind] = totals.get(kind, 0) + int(count)
        if done.returncode not in (0, 5):  # 5: every test of the file deselected
            failed_files.append(f"{name} (exit {done.returncode})")
            if not _COUNT.search(summary):  # a crash: count the file as one failure
                totals["failed"] = totals.get("failed", 0) + 1
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{len(files)} files in {minutes:.1f} min")
    if failed_files:
        print("failed: " + ", ".join(failed_files))
    others = [f"{totals[kind]} {kind}" for kind in ("xfailed", "deselected") if kind in totals]
    if others:
        print(", ".join(others))
    failed = totals.get("failed", 0) + totals.get("errors", 0)
    skipped = f", {totals['skipped']} skipped" if "skipped" in totals else ""
    print(f"{totals.get('passed', 0)} passed, {failed} failed{skipped}")
    return 1 if failed_files else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
