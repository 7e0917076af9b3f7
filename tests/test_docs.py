"""Every ```python block of the documentation runs, prints what the page says it prints, and the
site builds with warnings as errors.

Blocks of one page (README.md and every docs page but the generated gallery) run in order in one
namespace (later blocks use earlier names), in a fresh Python process with JAX's default settings
(float32, as a reader runs them; the suite's conftest enables float64). A block preceded by the
line `<!-- no-run -->` is skipped: keep that rare (a block that needs a GPU, a download or a
user's own file).

A ```text block that directly follows a python block (blank lines between are allowed) is that
block's printed output, checked line by line: the words must be equal (runs of spaces count as
one), integers must be equal, and every other number must agree with the printed one to one
unit in the last digit shown (the page may show fewer digits than Python prints: `0.3741`
accepts 0.37413390659439894 and `3e-3` accepts 0.0027). A number written `<X` in the page (for
rounding-level values such as a converged gap) accepts any printed number below X. A line `...`
stands for any number of printed lines (a long table), once per block.
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
FENCE = re.compile(r"^```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
SEPARATOR = "<<<sparsedict-docs: next block>>>"
NUMBER = re.compile(r"(<?)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


def _pages():
    pages = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
    pages = [p for p in pages if os.sep + "gallery" + os.sep not in p]
    return [os.path.join(ROOT, "README.md"), *pages]


def documented_blocks(text):
    """`[(code, printed output or None)]` for the runnable ```python blocks of a markdown text."""
    fences = list(FENCE.finditer(text))
    blocks = []
    for i, fence in enumerate(fences):
        if fence.group("lang") != "python":
            continue
        preceding = text[: fence.start()].rstrip().splitlines()[-1:] or [""]
        if preceding[0].strip() == NO_RUN:
            continue
        following = fences[i + 1] if i + 1 < len(fences) else None
        output = None
        if (
            following is not None
            and following.group("lang") == "text"
            and not text[fence.end() : following.start()].strip()
        ):
            output = following.group("body")
        blocks.append((fence.group("body"), output))
    return blocks


def python_blocks(text):
    """The runnable ```python blocks of a markdown text, in order."""
    return [code for code, _ in documented_blocks(text)]


def test_block_extraction():
    text = (
        "a\n```python\nx = 1\n```\n<!-- no-run -->\n```python\nraise "
        "SystemExit\n```\n```bash\nls\n```\n```python\nprint(2)\n```\n\n```text\n2\n```\n"
    )
    assert python_blocks(text) == ["x = 1\n", "print(2)\n"]
    assert documented_blocks(text)[1] == ("print(2)\n", "2\n")
    assert documented_blocks(text)[0][1] is None


def _decimals_unit(shown):
    """One unit in the last digit of a number as written (`0.6765` -> 1e-4, `3e-3` -> 1e-3); 0
    for an integer (counts and shapes are exact)."""
    mantissa, _, exponent = shown.lower().partition("e")
    if "." not in mantissa and not exponent:
        return 0.0
    decimals = len(mantissa.partition(".")[2])
    return 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def output_mismatches(printed, documented):
    """Lines of `printed` that do not match `documented` under the rules of the module docstring."""
    got = [line.rstrip() for line in printed.rstrip().splitlines()]
    want = [line.rstrip() for line in documented.rstrip().splitlines()]
    if "..." in want:  # the lines the page leaves out: compare the head and the tail
        cut = want.index("...")
        head, tail = want[:cut], want[cut + 1 :]
        if len(got) < len(head) + len(tail):
            return [f"{len(got)} lines printed, at least {len(head) + len(tail)} documented"]
        got = got[: len(head)] + (got[len(got) - len(tail) :] if tail else [])
        want = head + tail
    if len(got) != len(want):
        return [f"{len(got)} lines printed, {len(want)} documented:\n" + "\n".join(got)]
    problems = []
    for g, w in zip(got, want, strict=True):
        g_text, w_text = NUMBER.split(g), NUMBER.split(w)
        # split gives text, '<' or '', number, text, ...: words at 0 mod 3, numbers at 2 mod 3
        words_equal = len(g_text) == len(w_text) and all(
            " ".join(a.split()) == " ".join(b.split())
            for a, b in zip(g_text[::3], w_text[::3], strict=True)
        )
        if not words_equal:
            problems.append(f"printed {g!r}, documented {w!r}")
            continue
        for below, shown, value in zip(w_text[1::3], w_text[2::3], g_text[2::3], strict=True):
            x, y = float(value), float(shown)
            ok = x < y if below else abs(x - y) <= _decimals_unit(shown) * (1 + 1e-9)
            if not ok:
                problems.append(f"printed {value} where the page shows {below}{shown}: {g!r}")
    return problems


def test_output_comparison():
    assert not output_mismatches("0.37413390659439894 True\n", "0.3741 True")
    assert output_mismatches("0.3744 True", "0.3741 True")  # beyond one unit in the last digit
    assert output_mismatches("0.3741 False", "0.3741 True")
    assert not output_mismatches("gap 5.7e-11", "gap <1e-08")
    assert output_mismatches("gap 5.7e-07", "gap <1e-08")
    assert not output_mismatches("0.0027276", "3e-3")
    assert output_mismatches("0.0047", "3e-3")
    assert not output_mismatches("(500, 64)   True", "(500, 64) True")
    assert output_mismatches("(500, 63) True", "(500, 64) True")
    assert output_mismatches("1\n2", "1")
    assert not output_mismatches("a 1\ntable\nrows\nb 2", "a 1\n...\nb 2")
    assert output_mismatches("a 1\ntable\nrows\nb 3", "a 1\n...\nb 2")
    assert output_mismatches("a 1", "a 1\n...\nb 2")


PAGES = [p for p in _pages() if python_blocks(open(p).read())]


def run_page(page, folder):
    """Run a page's blocks in a fresh process in `folder`; `[printed output of each block]`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), page],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout.split(SEPARATOR + "\n")[1:]


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_page_snippets_run_and_print_what_the_page_shows(page, tmp_path):
    blocks = documented_blocks(open(page).read())
    printed = run_page(page, tmp_path)  # snippets that write files write them in tmp_path
    assert len(printed) == len(blocks)
    name = os.path.relpath(page, ROOT)
    problems = [
        f"{name}, python block {i}: {problem}"
        for i, ((_, documented), out) in enumerate(zip(blocks, printed, strict=True))
        if documented is not None
        for problem in output_mismatches(out, documented)
    ]
    assert not problems, "\n".join(problems)


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


@pytest.mark.slow
@needs_mkdocs
def test_multi_line_returns_render_as_one_item(site):
    """A Returns section that wraps over several lines is one row of text, not one row per
    line (mkdocstrings' `returns_multiple_items: false`)."""
    code, output, folder = site
    assert code == 0, output
    html = (folder / "api" / "index.html").read_text()
    start = html.index('id="sparsedict.sparse_code"')
    returns = html[html.index("Returns", start) : html.index("Derivatives", start)]
    assert returns.count("<tr") == 2, returns  # the header row and one item


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


def _run_blocks(page):
    """`python tests/test_docs.py PAGE`: run the page's blocks, a separator line before each."""
    namespace = {"__name__": "__docs__"}
    for i, code in enumerate(python_blocks(open(page).read())):
        print(SEPARATOR, flush=True)
        exec(compile(code, f"{os.path.relpath(page, ROOT)}[block {i}]", "exec"), namespace)
        sys.stdout.flush()


if __name__ == "__main__":
    _run_blocks(sys.argv[1])
