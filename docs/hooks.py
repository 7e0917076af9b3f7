"""mkdocs hooks: include the benchmark results present at build time (none is fine)."""

import glob
import os
import re

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
MARKER = "<!-- benchmark-results -->"


def _pngs():
    return sorted(glob.glob(os.path.join(RESULTS, "*.png")))


# a relative link in a results file (to a figure or data next to it)
_RELATIVE_LINK = re.compile(r"\]\((?!https?:|#|/)([^)\s]+)\)")


def _linked(text):
    """The relative links of `text` (as written in benchmarks/results/)."""
    return _RELATIVE_LINK.findall(text)


def on_files(files, config):
    linked = set()
    for path in glob.glob(os.path.join(RESULTS, "*.md")):
        with open(path) as f:
            linked.update(_linked(f.read()))
    names = {os.path.basename(p) for p in _pngs()} | linked
    for name in sorted(names):
        path = os.path.join(RESULTS, name)
        if os.path.isfile(path):
            files.append(File.generated(config, f"benchmarks/results/{name}", abs_src_path=path))
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
        # links relative to benchmarks/results/, where the site puts the files they name
        text = _RELATIVE_LINK.sub(r"](benchmarks/results/\1)", text)
        parts.append(f"## {os.path.basename(path)[:-3]}\n\n{text}")
    for path in _pngs():
        name = os.path.basename(path)
        parts.append(f"![{name}](benchmarks/results/{name})")
    if not parts:
        parts.append("*No benchmark results were present when this site was built.*")
    return markdown.replace(MARKER, "\n\n".join(parts))
