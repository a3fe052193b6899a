"""The study's report: out/report.html (one self-contained page), out/report.md, out/figures/ (PNG + SVG) and,
with pdf=True, out/report.pdf (pdf.py).

A pure function of the study's typed Summary and the test images: the same inputs give the same bytes, so a
resumed study rewrites an identical report. document.py holds the model both pages render, content.py what
they say (answers.py: the answer blocks), html.py and markdown.py the two renderings, figures.py every figure.
"""

from __future__ import annotations

from pathlib import Path

from ..mnist.records import atomic_write
from ..mnist.summary import Summary
from .document import TITLE  # noqa: F401  (the page's title)
from .figures import FIGURES, make_figures  # noqa: F401
from .html import render_html
from .markdown import render_markdown
from .pdf import print_pdf


def write_report(out, summary: Summary, test_images, pdf: bool = False) -> dict[str, Path]:
    """Write out/report.html, out/report.md and out/figures/<name>.{png,svg} (and out/report.pdf); return their paths.

    test_images: uint8 (N, 784), the test split the summary's misclassified digits index into.
    """
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    figs = make_figures(summary, test_images)
    files = {f"figures/{name}.{ext}": blob for name, pair in figs.items() for ext, blob in zip(("png", "svg"), pair)}
    files |= {"report.md": render_markdown(summary, figs), "report.html": render_html(summary, figs)}
    paths = {Path(rel).name: out / rel for rel in files}
    for rel, blob in files.items():
        atomic_write(out / rel, blob)
    if pdf:  # last: without Chromium it raises, and the HTML and Markdown are already in place
        paths["report.pdf"] = print_pdf(render_html(summary, figs, printable=True), out / "report.pdf")
    return paths
