"""Every ```python block of the documentation runs, and the site builds with warnings as errors.

Blocks of one page run in order in one namespace (later blocks use earlier names). A block
preceded by the line `<!-- no-run -->` is skipped: keep that rare (a block that needs a GPU, a
download or a user's own file).
"""

import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from html import unescape

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


needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason='mkdocs not installed (pip install ".[docs]")',
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once with warnings as errors: (returncode, output, folder)."""
    folder = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", folder],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stdout + result.stderr, folder


@pytest.mark.slow
@needs_mkdocs
def test_mkdocs_build_strict(site):
    code, output, folder = site
    assert code == 0, output
    assert (folder / "index.html").exists()


def _pages_html(folder):
    return {p: p.read_text() for p in sorted(folder.rglob("*.html"))}


SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"([^\"]+)\"")
STYLESHEET = re.compile(r"<link\b[^>]*\brel=\"stylesheet\"[^>]*\bhref=\"([^\"]+)\"")
MATH = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)


@pytest.mark.slow
@needs_mkdocs
def test_site_math_needs_no_network(site):
    """Every script of every page is a file of the site (KaTeX is bundled, no CDN), KaTeX's own
    stylesheet too, and every page with math loads it. (Web fonts of the theme may still come
    from the network: without them the browser uses its own fonts.)"""
    code, output, folder = site
    assert code == 0, output
    pages = _pages_html(folder)
    with_math = 0
    for page, html in pages.items():
        for url in SCRIPT.findall(html):
            assert "//" not in url, f"{page.relative_to(folder)} loads a remote script {url}"
            path = url.split("?")[0]  # site-absolute in 404.html, else relative to the page
            target = folder / path.lstrip("/") if path.startswith("/") else page.parent / path
            assert target.resolve().is_file(), (page, url)
        if MATH.search(html):
            with_math += 1
            assert any(u.endswith("katex.min.js") for u in SCRIPT.findall(html)), page
            css = [u for u in STYLESHEET.findall(html) if "katex" in u]
            assert css and all("//" not in u for u in css), page
    assert with_math >= 5  # the theory, the conditions, the guides, the API reference


# Renders each formula with the bundled KaTeX in node, as the page's script would in a browser.
RENDER = """
const katex = require(process.argv[2]);
const formulas = JSON.parse(require("fs").readFileSync(0, "utf8"));
const failed = [];
for (const [tex, display] of formulas) {
  try { katex.renderToString(tex, { displayMode: display, throwOnError: true }); }
  catch (e) { failed.push([tex, String(e.message)]); }
}
console.log(JSON.stringify(failed));
"""


@pytest.mark.slow
@needs_mkdocs
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_every_formula_renders_with_the_bundled_katex(site, tmp_path):
    """No browser here: KaTeX itself (the bundled file) parses every formula of the site with
    errors raised, which is what the page's script does before drawing."""
    code, output, folder = site
    assert code == 0, output
    formulas = []
    for html in _pages_html(folder).values():
        for tag, text in MATH.findall(html):
            text = unescape(text).strip()
            display = tag == "div"
            opening, closing = ("\\[", "\\]") if display else ("\\(", "\\)")
            assert text.startswith(opening) and text.endswith(closing), text
            formulas.append((text[2:-2], display))
    assert len(formulas) > 100
    script = tmp_path / "render.js"
    script.write_text(RENDER)
    katex = folder / "assets" / "katex" / "katex.min.js"
    result = subprocess.run(
        ["node", script, katex], input=json.dumps(formulas), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    failed = json.loads(result.stdout)
    assert not failed, f"{len(failed)} of {len(formulas)} formulas fail in KaTeX: {failed[:5]}"
