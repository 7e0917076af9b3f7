"""Where the benchmark scripts write their results: `benchmarks/results/<name>.json` and `.md`."""

import json
import os


def write_results(out, name, meta, rows, markdown):
    """`{"meta", "rows"}` as JSON and `markdown(meta, rows)` as a table, side by side in `out`."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, name)
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(meta, rows))
    print(f"wrote {stem}.md and .json")
