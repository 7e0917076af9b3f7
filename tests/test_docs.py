"""Every ```python block of the documentation runs, and the site builds with warnings as errors.

Blocks of one page run in order in one namespace (later blocks use earlier names). A block
preceded by the line `<!-- no-run -->` is skipped: keep that rare (a block that needs a GPU, a
download or a user's own file).
"""

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
NO_RUN = "<!-- no-run -->"
BLOCK = re.compile(r"^(?P<before>.*?)^```python[^\n]*\n(?P<code>.*?)^```", re.S | re.M)


def _pages():
    pages = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
    return [p for p in pages if os.sep + "gallery" + os.sep not in p]


def python_blocks(text):
    """The runnable ```python blocks of a markdown text, in order."""
    blocks, rest = [], text
    while (match := BLOCK.search(rest)) is not None:
        preceding = match.group("before").rstrip().splitlines()[-1:] or [""]
        if preceding[0].strip() != NO_RUN:
            blocks.append(match.group("code"))
        rest = rest[match.end() :]
    return blocks


def test_block_extraction():
    text = (
        "a\n```python\nx = 1\n```\n<!-- no-run -->\n```python\nraise "
        "SystemExit\n```\n```bash\nls\n```\n"
    )
    assert python_blocks(text) == ["x = 1\n"]


PAGES = [p for p in _pages() if python_blocks(open(p).read())]


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, DOCS) for p in PAGES])
def test_page_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets that write files write them here
    namespace = {"__name__": "__docs__"}
    for i, code in enumerate(python_blocks(open(page).read())):
        try:
            exec(compile(code, f"{os.path.relpath(page, ROOT)}[block {i}]", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(
                f"{os.path.relpath(page, ROOT)}, python block {i} failed: {e!r}"
            ) from e


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason='mkdocs not installed (pip install ".[docs]")',
)
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            "mkdocs.yml",
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").exists()
