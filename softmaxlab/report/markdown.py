"""The report in GitHub Markdown (figures linked as figures/<name>.png), from content.py's document."""

from __future__ import annotations

import html
import re

from ..mnist.summary import Summary
from .content import document, subtitle
from .document import TITLE, Answer, Aside, Badge, Code, Details, Figure, Link, Math, Para, Strong, Table
from .html import _numeric_columns

_MD_ESCAPE = re.compile(r"([\\`*_\[\]|~])")


def _md(s) -> str:
    """Plain text for GitHub Markdown: HTML-escaped, Markdown punctuation backslash-escaped, one line."""
    s = html.escape(str(s), quote=False).replace("\r", " ").replace("\n", " ")
    return _MD_ESCAPE.sub(r"\\\1", s)


def _md_code(s: str) -> str:
    s = str(s).replace("\r", " ").replace("\n", " ")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _md_inline(x, in_table: bool = False) -> str:
    if isinstance(x, list):
        return "".join(_md_inline(p, in_table) for p in x)
    if isinstance(x, Code):
        s = _md_code(x.text)
        return s.replace("|", "\\|") if in_table else s  # GFM splits cells on | even inside code spans
    if isinstance(x, Link):  # in-page anchors do not survive GitHub's renderer: a run id reads as code, words as text
        return _md_code(x.text).replace("|", "\\|") if x.anchor.startswith("run-") else _md(x.text)
    if isinstance(x, Strong):  # "**Protocol. **" is not bold in CommonMark: the space goes outside
        core = x.text.strip()
        return x.text[:len(x.text) - len(x.text.lstrip())] + f"**{_md(core)}**" + x.text[len(x.text.rstrip()):]
    if isinstance(x, Badge):
        return _md(x.text) if x.ok else f"**{_md(x.text)}**"
    if isinstance(x, Aside):
        return f" ({_md(x.text)})"
    if isinstance(x, Math):  # GitHub renders $...$ and $$...$$ (KaTeX); no Markdown escapes inside
        return f"$$\n{x.latex}\n$$" if x.display else f"${x.latex}$"
    return _md(x)


def _md_details(d: Details) -> str:
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", d.code)), default=0) + 1)
    return f"<details><summary>{html.escape(d.summary)}</summary>\n\n{fence}json\n{d.code}\n{fence}\n\n</details>"


def _md_block(b, figures: set[str]) -> str:
    if isinstance(b, Math):
        return _md_inline(b)
    if isinstance(b, Answer):
        return "\n\n".join([f"### {_md(b.title)}", f"*{_md(b.question)}*"] + [_md_block(x, figures) for x in b.blocks])
    if isinstance(b, Para):
        return f"> {_md_inline(b.parts)}" if b.note else _md_inline(b.parts)
    if isinstance(b, Details):
        return _md_details(b)
    if isinstance(b, Figure):
        if b.name not in figures:
            return f"*Figure {_md(b.name)}: no data for it in this study.*"
        return (f"![{_md(b.caption)}](figures/{b.name}.png)\n\n*{_md(b.caption)}* "
                f"([SVG](figures/{b.name}.svg))")
    if isinstance(b, Table):
        num = _numeric_columns(b)
        out = [f"**{_md(b.caption)}**", "", "| " + " | ".join(_md(h) for h in b.headers) + " |",
               "|" + "|".join("---:" if n else "---" for n in num) + "|"]
        out += ["| " + " | ".join(_md_inline(c, True) for c in row) + " |" for row in b.rows]
        if b.details:
            out += [""] + [_md_details(d) for d in b.details]
        return "\n".join(out)
    raise TypeError(f"unknown block {type(b).__name__}")


def render_markdown(summary: Summary, figures) -> str:
    """The page; figures: the names of the figures drawn (a figure without data says so in its place)."""
    figures = set(figures)
    head, sections = document(summary)
    parts = [f"# {_md(TITLE)}", f"*{_md(subtitle(summary))}*"]
    parts += [_md_block(b, figures) for b in head]
    for s in sections:
        parts.append(f"## {_md(s.title)}")
        parts += [_md_block(b, figures) for b in s.blocks]
    return "\n\n".join(parts) + "\n"
