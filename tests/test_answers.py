"""The report's answer blocks: one per question, generated from the Summary and the formulas; the formulas the
same as docs/derivations.md's; the source's five errors named with their measured consequence; the paired tests
behind Q4's verdict, checked on hand-made examples."""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_report import _Page, make_study  # noqa: E402

from softmaxlab.derivations import source_gradient_error  # noqa: E402
from softmaxlab.mnist.models import mlp_param_count, negative_root, width_root  # noqa: E402
from softmaxlab.mnist.stats import holm, min_p, paired, paired_family  # noqa: E402
from softmaxlab.report import answers  # noqa: E402
from softmaxlab.report.html import render_html  # noqa: E402
from softmaxlab.report.markdown import render_markdown  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "derivations.md"
ORDER = ["answer-p1-q1", "answer-p1-q2", "answer-p2-q1", "answer-p2-q2", "answer-p2-q3", "answer-p2-q4"]


@pytest.fixture(scope="module")
def study():
    return make_study(n_test=200)[0]


def test_derivations_doc_carries_the_generated_answers():
    assert answers.answers_markdown() in DOC.read_text(), "run python scripts/derivations_answers.py"


def test_every_formula_of_the_report_is_in_the_derivations_doc(study):
    md, doc = render_markdown(study, []), DOC.read_text()
    display = re.findall(r"\$\$\n(.*?)\n\$\$", md, re.S)
    inline = re.findall(r"(?<!\$)\$([^$\n]+)\$(?!\$)", re.sub(r"\$\$\n.*?\n\$\$", "", md, flags=re.S))
    assert len(display) >= 9 and len(inline) >= 3, (len(display), len(inline))
    for f in display + inline:
        assert f in doc, f


def test_six_answer_blocks_in_the_assignments_order(study):
    html = render_html(study, {})
    assert [m for m in re.findall(r'<div class="answer" id="([^"]+)"', html)] == ORDER
    page = _Page(html)
    assert "math" in page.tags and "script" not in page.tags
    assert html.count("<math ") == html.count("</math>") >= 12


def test_the_source_errors_are_named_with_the_measured_consequence(study):
    md = render_markdown(study, [])
    notes = [ln for ln in md.splitlines() if ln.startswith("> **The source wrote**")]
    assert len(notes) == 5, notes
    for n in notes:
        assert "**the correct form is**" in n and ", because " in n and "**Measured:**" in n, n
    g = study.source.gradient
    assert f"cosine {g.true_row_cosine:.2f}" in notes[0]
    assert "at K = 1 and" in notes[1] and "does not shrink" in notes[1]
    assert "1,863,690" in notes[2]  # P(2, 1024)
    assert "3,017,130" in notes[3]  # P(2, |negative root| = 1384)
    assert "width 1024 reaches" in notes[4]  # the fake study has the fixed-width runs


def test_problem1_answers_state_the_formulas_in_p(study):
    md = render_markdown(study, [])
    q1 = md[md.index("### Problem 1 Q1"):md.index("### Problem 1 Q2")]
    assert "∂l/∂w\\_i = (p\\_i − 1\\[i = c\\]) x" in q1 and "∂l/∂b\\_i = p\\_i − 1\\[i = c\\]" in q1
    assert r"$$\n\frac{\partial \ell}{\partial w_i} = (p_i - \mathbf{1}[i=c])\, x".replace(r"\n", "\n") in q1
    q2 = md[md.index("### Problem 1 Q2"):md.index("### Problem 2 Q1")]
    assert "n\\_j counts the draws" in q2 and r"\hat p_j = \frac{n_j\, q_j\, e^{z_j}}{K \hat D}" in q2


def test_source_gradient_points_the_true_row_the_wrong_way():
    """-log p_i p_i (1 - p_i) x is a positive multiple of x for every row; the true row's gradient (p_c - 1) x is a
    negative one: cosine exactly -1, and the whole gradient is far off."""
    for seed in range(3):
        g = source_gradient_error(seed=seed)
        assert g.true_row_cosine == pytest.approx(-1.0, abs=1e-12)
        assert g.rel_err > 0.5 and abs(g.cosine) < 0.5


def test_negative_root_solves_the_quadratic_but_is_no_width():
    for L in range(2, 9):
        r = negative_root(L)
        count = (L - 1) * r * r + (L + 794) * r + 10  # the same polynomial at a real k
        assert r < 0 and count == pytest.approx(814_090, rel=1e-9)
        assert mlp_param_count(L, round(abs(r))) > 1.7 * 814_090  # |root| as a width: far over the budget
        assert width_root(L) + r == pytest.approx(-(L + 794) / (L - 1))
    assert negative_root(2) == pytest.approx(-1384.146, abs=1e-3) and mlp_param_count(2, 1384) == 3_017_130


# ---- the paired tests ---------------------------------------------------------------------------------------


def test_signed_rank_on_a_hand_made_example():
    base = {s: 0.90 for s in range(10)}
    better = {s: 0.90 + 0.001 * (s + 1) for s in range(10)}  # better on all 10 seeds, distinct differences
    seeds, m, ci, wins, p = paired(better, base)
    assert seeds == tuple(range(10)) and wins == 10
    assert m == pytest.approx(0.0055) and p == pytest.approx(2 / 2 ** 10) == min_p(10)
    # one seed worse (the smallest |difference|): exactly 2 of the 1024 sign patterns are as extreme on each side
    worse_one = {**better, 0: 0.899}
    assert paired(worse_one, base)[4] == pytest.approx(4 / 1024)
    # only the seeds both have are paired
    assert paired({0: 0.9, 1: 0.91, 7: 0.5}, {0: 0.8, 1: 0.8, 2: 0.8})[0] == (0, 1)
    assert math.isnan(paired({0: 0.9}, {0: 0.8})[4]) and math.isnan(paired(base, base)[4])


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, math.nan, 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def _with_depths(study, acc_by_layer):
    """The fake study with Q4 replaced by 10-seed depths whose accuracies are acc_by_layer[L](seed)."""
    q4 = tuple(dataclasses.replace(study.q4[0], name=f"mlp-L{L}", layers=L, seeds=tuple(range(10)), n=10)
               for L in acc_by_layer)
    acc = {f"mlp-L{L}": {s: f(s) for s in range(10)} for L, f in acc_by_layer.items()}
    pairs = [(f"mlp-L{L}", L, f"mlp-L{b}", b) for L in acc_by_layer for b in dict.fromkeys((1, L - 1))
             if b in acc_by_layer and b != L]
    return dataclasses.replace(study, q4=q4, q4_tests=paired_family(pairs, acc))


def test_verdict_names_the_depths_that_win(study):
    noise = lambda s: 0.0001 * ((s * 7) % 10 - 4.5)
    s = _with_depths(study, {1: lambda s: 0.92 + noise(s), 2: lambda s: 0.94 + 0.001 * s,
                             3: lambda s: 0.94 + 0.001 * s + noise(s), 4: lambda s: 0.92 - noise(s)})
    text = " ".join(p.parts[1] for p in answers.verdict(s)[:1])
    assert "Holm-adjusted over 5 comparisons" in text and "10 seeds" in text
    assert "L = 2, 3 beat one hidden layer" in text
    assert "1 → 2" in text and "3 → 4" in text  # the significant neighbour steps: up, then down
    assert "2 → 3" not in text and "L = 4" not in text  # differences symmetric about 0: not significant
    assert len(answers.verdict(s)) == 1  # 10 seeds: no "cannot support" note


def test_few_seeds_say_what_they_cannot_support(study):
    blocks = answers.verdict(study)  # the fake study: 2 seeds
    note = [b for b in blocks if getattr(b, "note", False)]
    assert note and "cannot show any difference at the 5% level" in note[0].parts[0]
    assert "smallest p-value a signed-rank test can give is 0.5" in note[0].parts[0]
