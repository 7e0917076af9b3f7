// Render the math that pymdownx.arithmatex (generic mode) leaves as \( \) and \[ \] in
// elements of class "arithmatex", with the KaTeX copy in assets/katex (no network needed).
function renderMath(root) {
  for (const element of root.querySelectorAll(".arithmatex")) {
    renderMathInElement(element, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
}

if (typeof document$ !== "undefined") {
  document$.subscribe(({ body }) => renderMath(body)); // mkdocs-material: every page load
} else {
  document.addEventListener("DOMContentLoaded", () => renderMath(document.body));
}
