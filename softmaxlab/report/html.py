"""The report as one self-contained HTML page, from content.py's document.

Figures are embedded as data URIs (PNG on screen; SVG in the printable variant pdf.py prints, so the PDF's
figures are vector); formulas are MathML (latex2mathml), which Chromium and Firefox render with no script and
no network, so the page opens from a USB stick.
"""

from __future__ import annotations

import base64
import html
import re

from latex2mathml.converter import convert as mathml

from ..mnist.summary import Summary
from .content import document, subtitle
from .document import TITLE, Answer, Aside, Badge, Code, Details, Figure, Link, Math, Para, Strong, Table

LONG_TABLE = 16  # rows; a longer table (48 gradient checks) scrolls inside a box

CSS = """
:root { --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --alt: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 28px 32px 72px; }
h1 { font-size: 1.9rem; margin: 0 0 .2rem; }
h2 { font-size: 1.35rem; margin: 2.4rem 0 .8rem; padding-bottom: .3rem; border-bottom: 1px solid var(--border); }
p { margin: .6rem 0; max-width: 78ch; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.sub { color: var(--muted); margin: 0 0 1rem; }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 1rem 0 1.4rem; padding: 0; list-style: none; }
nav.toc a { display: inline-block; padding: 3px 10px; border: 1px solid var(--border); border-radius: 999px;
  font-size: .88rem; background: var(--alt); }
.note { background: #fff8c5; border: 1px solid #e6cf7a; border-radius: 6px; padding: 8px 12px; }
.wrap { overflow-x: auto; margin: .8rem 0 1.2rem; }
.wrap.long { max-height: 26rem; overflow-y: auto; width: fit-content; max-width: 100%;
  border-bottom: 1px solid var(--border); }
.wrap.long caption { position: sticky; top: 0; background: #fff; }
.wrap.long th { position: sticky; top: 1.6rem; }
table { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0 0 6px; }
th, td { border: 1px solid var(--border); padding: 4px 8px; vertical-align: top; }
th { background: var(--alt); text-align: left; font-weight: 600; }
tbody tr:nth-child(even) td { background: #fafbfc; }
tbody tr:target td { background: #fff3b0; }
td { white-space: nowrap; } td.num { text-align: right; }
a[href^="#run-"] { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: .78rem; }
td:last-child { white-space: normal; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  font-size: .82rem; }
code { background: var(--alt); padding: 1px 4px; border-radius: 4px; }
pre { background: var(--alt); border: 1px solid var(--border); border-radius: 6px; padding: 10px 12px;
  overflow: auto; max-height: 420px; }
details { margin: .3rem 0; } summary { cursor: pointer; color: var(--muted); }
.badge { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: .8rem; font-weight: 600; }
.badge.ok { background: #dafbe1; color: #116329; } .badge.bad { background: #ffebe9; color: #a40e26; }
figure { margin: 1rem 0 1.6rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--border); border-radius: 6px; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: 6px; max-width: 90ch; }
.aside { color: var(--muted); font-size: .8rem; }
.missing { color: var(--muted); font-style: italic; }
.runs-details { columns: 2 420px; column-gap: 24px; } .runs-details details { break-inside: avoid; }
.answer { border: 1px solid var(--border); border-left: 4px solid var(--accent); border-radius: 6px;
  padding: 4px 16px 8px; margin: 1rem 0 1.4rem; }
.answer h3 { margin: .6rem 0 .2rem; font-size: 1.1rem; } .question { color: var(--muted); font-style: italic; }
.math { margin: .5rem 0; overflow-x: auto; overflow-y: hidden; padding: 2px 0; } math { font-size: 1.08em; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 11px; } main { max-width: none; padding: 0; } nav.toc { display: none; }
  section { break-before: page; } section#answers { break-before: auto; } h2 { margin-top: 0; }
  figure, .math, p, tr { break-inside: avoid; } .answer h3, .question { break-after: avoid; }
  .wrap, .wrap.long, .math { overflow: visible; max-height: none; width: auto; }
  table { font-size: .72rem; } td { white-space: normal; }
  figure img { max-width: 100%; height: auto; }
}
"""


def _h(s) -> str:
    return html.escape(str(s), quote=True)


def _html_inline(x) -> str:
    if isinstance(x, list):
        return "".join(_html_inline(p) for p in x)
    if isinstance(x, Code):
        return f"<code>{_h(x.text)}</code>"
    if isinstance(x, Link):
        return f'<a href="#{_h(x.anchor)}">{_h(x.text)}</a>'
    if isinstance(x, Strong):
        return f"<strong>{_h(x.text)}</strong>"
    if isinstance(x, Badge):
        return f'<span class="badge {"ok" if x.ok else "bad"}">{_h(x.text)}</span>'
    if isinstance(x, Aside):
        return f'<br><span class="aside">{_h(x.text)}</span>'
    if isinstance(x, Math):
        return mathml(x.latex, display="block" if x.display else "inline")
    return _h(x)


_NUMERIC = re.compile(r"^([+-]?[\d,]+(\.\d+)?(e[+-]?\d+)?( ± ([\d.,]+|n/a))?|n/a)$")


def _numeric_columns(t: Table) -> list[bool]:
    """Right-align a column whose every cell reads as a number (n/a included)."""
    cols = [[row[j] for row in t.rows if j < len(row)] for j in range(len(t.headers))]
    return [bool(cells) and all(isinstance(c, str) and _NUMERIC.match(c) for c in cells)
            and not all(c == "n/a" for c in cells) for cells in cols]


def _html_details(d: Details, printable: bool = False) -> str:
    return f"<details{' open' if printable else ''}><summary>{_h(d.summary)}</summary><pre>{_h(d.code)}</pre></details>"


def _html_block(b, figures: dict[str, tuple[bytes, bytes]], printable: bool = False) -> str:
    if isinstance(b, Math):
        return f'<div class="math">{_html_inline(b)}</div>'
    if isinstance(b, Answer):
        return (f'<div class="answer" id="{_h(b.id)}"><h3>{_h(b.title)}</h3><p class="question">{_h(b.question)}</p>'
                + "\n".join(_html_block(x, figures, printable) for x in b.blocks) + "</div>")
    if isinstance(b, Para):
        return f'<p class="note">{_html_inline(b.parts)}</p>' if b.note else f"<p>{_html_inline(b.parts)}</p>"
    if isinstance(b, Details):
        return _html_details(b, printable)
    if isinstance(b, Figure):
        if b.name not in figures:
            return f'<p class="missing" id="fig-{_h(b.name)}">Figure {_h(b.name)}: no data for it in this study.</p>'
        png, svg = figures[b.name]
        kind, blob = ("svg+xml", svg) if printable else ("png", png)
        uri = f"data:image/{kind};base64," + base64.b64encode(blob).decode("ascii")
        w, h = (int.from_bytes(png[i:i + 4], "big") for i in (16, 20))  # pixels, from the PNG's IHDR chunk
        # shown at 100 dpi: the PNGs are 150 dpi, sharp on high-density screens
        return (f'<figure id="fig-{_h(b.name)}"><img src="{uri}" width="{w * 2 // 3}" height="{h * 2 // 3}" '
                f'alt="{_h(b.caption)}">'
                f"<figcaption>{_h(b.caption)}</figcaption></figure>")
    if isinstance(b, Table):
        num = _numeric_columns(b)
        long = " long" if len(b.rows) > LONG_TABLE and not b.details else ""  # scrolls in its own box
        out = [f'<div class="wrap{long}"><table id="{_h(b.id)}">', f"<caption>{_h(b.caption)}</caption>", "<thead><tr>",
               *[f"<th>{_h(h)}</th>" for h in b.headers], "</tr></thead><tbody>"]
        for i, row in enumerate(b.rows):
            rid = f' id="{_h(b.row_ids[i])}"' if b.row_ids else ""
            cells = "".join(("<td class=\"num\">" if num[j] else "<td>") + f"{_html_inline(c)}</td>"
                            for j, c in enumerate(row))
            out.append(f"<tr{rid}>{cells}</tr>")
        out.append("</tbody></table></div>")
        if b.details and printable:  # one JSON record per run would be most of the PDF's pages
            out.append('<p class="aside">Each run\'s full record: report.html (under this table) and '
                       'runs/&lt;run id&gt;/result.json.</p>')
        elif b.details:
            out.append('<div class="runs-details">' + "".join(_html_details(d) for d in b.details) + "</div>")
        return "\n".join(out)
    raise TypeError(f"unknown block {type(b).__name__}")


def render_html(summary: Summary, figures: dict[str, tuple[bytes, bytes]], printable: bool = False) -> str:
    """The page; figures: name -> (PNG, SVG) bytes (a figure without data says so in its place).

    printable: the variant pdf.py prints: SVG figures, configs expanded, per-run records left to report.html."""
    head, sections = document(summary)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{_h(TITLE)}</title>",
             f"<style>{CSS}</style>", "</head>", "<body>", "<main>", f"<h1>{_h(TITLE)}</h1>",
             f'<p class="sub">{_h(subtitle(summary))}</p>',
             '<nav class="toc">' + "".join(f'<a href="#{_h(s.id)}">{_h(s.title.split(":")[0])}</a>'
                                            for s in sections) + "</nav>"]
    parts += [_html_block(b, figures, printable) for b in head]
    for s in sections:
        parts.append(f'<section id="{_h(s.id)}"><h2>{_h(s.title)}</h2>')
        parts += [_html_block(b, figures, printable) for b in s.blocks]
        parts.append("</section>")
    parts += ["</main>", "</body>", "</html>"]
    return "\n".join(parts) + "\n"
