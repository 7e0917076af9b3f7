"""mkdocs hooks: include the benchmark results present at build time (none is fine)."""

import glob
import os

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MARKER = "<!-- benchmark-results -->"


def _pngs():
    return sorted(glob.glob(os.path.join(RESULTS, "*.png")))


def on_files(files, config):
    for path in _pngs():
        files.append(
            File.generated(
                config, f"benchmarks/results/{os.path.basename(path)}", abs_src_path=path
            )
        )
    return files


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    parts = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.md"))):
        with open(path) as f:
            text = f.read().strip()
        # demote headings so the page keeps one title
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        parts.append(f"## {os.path.basename(path)[:-3]}\n\n{text}")
    for path in _pngs():
        name = os.path.basename(path)
        parts.append(f"![{name}](benchmarks/results/{name})")
    if not parts:
        parts.append("*No benchmark results were present when this site was built.*")
    return markdown.replace(MARKER, "\n\n".join(parts))
