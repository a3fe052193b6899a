"""The report's document model (sections of paragraphs, tables and figures) and its number formats.

content.py builds the document from the study's Summary; html.py and markdown.py render the same document,
so both pages say the same thing. Every string is data, never markup: the renderers escape it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TITLE = "softmaxlab: CS 7150 HW-2 study"


@dataclass(frozen=True)
class Text:
    text: str


class Code(Text):
    """Monospace: a command, a run id, a commit."""


class Strong(Text):
    """Bold: a paragraph's lead-in."""


class Aside(Text):
    """A remark on its own line under a cell's value, in small type."""


@dataclass(frozen=True)
class Link:
    text: str
    anchor: str  # an element id on this page


@dataclass(frozen=True)
class Badge:
    text: str
    ok: bool


@dataclass(frozen=True)
class Details:
    """A collapsed block of preformatted text (a config as JSON)."""

    summary: str
    code: str


@dataclass(frozen=True)
class Math:
    """A formula in LaTeX: MathML in the HTML page (no script, no network), $...$ in the Markdown."""

    latex: str
    display: bool = False  # a block of its own, centred


# An inline is a str, Code, Link, Strong, Badge, Aside or Math; a cell or paragraph is one inline or a list of them.


@dataclass
class Para:
    parts: list
    note: bool = False  # a highlighted warning box


@dataclass
class Table:
    id: str
    caption: str
    headers: list[str]
    rows: list[list]
    row_ids: list[str] | None = None
    details: list[Details] = field(default_factory=list)  # shown under the table (per-run configs)


@dataclass
class Figure:
    name: str
    caption: str


@dataclass
class Answer:
    """One question of the assignment: the question in a line, then the answer's blocks."""

    id: str
    title: str  # "Problem 1 Q1"
    question: str
    blocks: list


@dataclass
class Section:
    id: str
    title: str
    blocks: list


def run_links(runs) -> list:
    """Links to the provenance table's rows of these runs (anything with a run_id), space-separated."""
    parts = [x for r in runs for x in (" ", Link(r.run_id, f"run-{r.run_id}"))]
    return parts[1:]  # no space before the first link


# ---- numbers: NaN (one seed, a diverged run) reads n/a -------------------------------------------


def _na(x, text) -> str:
    """text(x as float) of a finite number; n/a for None, NaN, inf, bools and anything else."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return text(float(x))


def fmt(x, spec: str = ".4g") -> str:
    return _na(x, lambda v: format(v, spec))


def fmt_int(x) -> str:
    return _na(x, lambda v: f"{round(v):,}")


def pct(x, digits: int = 2) -> str:
    """A fraction as a percentage without the sign: 0.97843 -> '97.84'."""
    return _na(x, lambda v: f"{100 * v:.{digits}f}")


def acc_ci(a) -> str:
    """'97.84 ± 0.12' (percent, 95% CI half-width over seeds) of an Arch; the CI reads n/a with one seed."""
    return "n/a" if math.isnan(a.test_acc_mean) else f"{pct(a.test_acc_mean)} ± {pct(a.test_acc_ci)}"


def acc_text(a) -> str:
    """For prose: '97.84 ± 0.12%', or '97.84%' when there is no CI (one seed)."""
    if math.isnan(a.test_acc_mean):
        return "n/a"
    return f"{pct(a.test_acc_mean)}%" if math.isnan(a.test_acc_ci) else f"{acc_ci(a)}%"


def fmt_cell(v) -> str:
    """A value of a generic table (the bias study's columns): floats to 4 significant digits."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    return fmt(v) if isinstance(v, float) or v is None else str(v)


def duration(s) -> str:
    return _na(s, _duration)


def _duration(v: float) -> str:
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.2f} h"
