"""The report's answer blocks: one per question of the assignment, in its order, built from the Summary and the
formulas of softmaxlab/derivations.py (never pasted text).

Each block: the question in one line, the answer, the check that backs it, and where the source's answer
differs, "the source wrote ...; the correct form is ..., because ...", with the measured consequence.
`python scripts/derivations_answers.py` regenerates that doc's Answers section from the same formulas
(tests/test_answers.py checks it is current).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from .. import derivations as dv
from ..derivations import Formula
from ..mnist.stats import min_p
from ..mnist.summary import Summary
from .document import Answer, Code, Link, Math, Para, Section, Strong, Table, acc_text, fmt, fmt_int, run_links

Q3_COUNT = Formula(r"P(L, k) = (L-1)k^2 + (L + 794)k + 10", "P(L, k) = (L − 1)k² + (L + 794)k + 10")
Q3_ROOT = Formula(r"k(L) = \frac{-(L+794) + \sqrt{(L+794)^2 + 4(L-1)(B - 10)}}{2(L-1)} \quad (L \ge 2)",
                  "k(L) = (−(L + 794) + √((L + 794)² + 4(L − 1)(B − 10))) / (2(L − 1)) for L ≥ 2")
FORMULAS = {"Problem 1 Q1": (dv.Q1_DZ, dv.Q1_DW, dv.Q1_CASES, dv.Q1_BATCH),
            "Problem 1 Q2": (dv.Q2_D, dv.Q2_P, dv.Q2_GRAD, dv.Q2_BIAS, dv.Q2_FIX),
            "Problem 2 Q3": (Q3_COUNT, Q3_ROOT),
            "What the source wrote (wrong; sections 1 and 2 say why)": dv.SOURCES}


def _m(f: Formula) -> Math:
    return Math(f.latex, display=True)


def _checks(s: Summary, prefix: str) -> Para:
    rows = [c for c in s.problem1.gradcheck if c.name.startswith(prefix)]
    ok = sum(c.ok for c in rows)
    worst = max((c.max_abs_err for c in rows), default=math.nan)
    return Para([Strong("Check. "), f"{ok} of {len(rows)} named gradient checks ", Code(prefix + "*"),
                 " pass against torch.autograd in float64 (largest absolute error "
                 f"{fmt(worst, '.1e')}; ", Link("the table", "gradcheck-table"), ")."])


# Where the source's answer is wrong: (what it wrote, the correct form, why), each answer's measured consequence apart
SOURCE_ERRORS = {
    "q1": ([Math(dv.SOURCE_Q1.latex)], ["(p_i − 1[i = c]) x"],
           "the outer derivative of −log u is −1/u at u = p_c, not the value −log p_i, and ∂p_c/∂z_i = "
           "p_c(1[i = c] − p_i), of which p_i(1 − p_i) is only the i = c entry."),
    "q2": ([Math(dv.SOURCE_Q2.latex), " as the estimate of Z, unbiased"], [Math(dv.Q2_FIX.latex)],
           "a class j ≠ c is drawn E[n_j] = K q'_j times, so weighting it by q_j/K gives E[D̂] = e^{z_c} + "
           "Σ q_j q'_j e^{z_j}, which shrinks the negatives' mass (90x for uniform q at C = 10) and does not approach "
           "Z as K grows; weighting by 1/(K q'_j) gives E[D̂] = Z."),
    "q3-count": (["for L = 2 the same parameter count as for L = 1"], [Math(Q3_COUNT.latex)],
                 "a second hidden layer of width k adds k² + k parameters."),
    "q3-root": (["“take the absolute value” of the quadratic's negative root"], ["its positive root"],
                "the product of the two roots is negative, so one root is negative: it is no width at all, and its "
                "absolute value does not solve P(L, k) = B."),
    "q4": (["(the bonus) width 1024 at every L"], ["k(L) from Q3 at every L"],
           "Q4 asks about depth at a fixed parameter budget."),
}


def _source(error: str, measured: list) -> Para:
    """The note on SOURCE_ERRORS[error]: what the source wrote, the correct form, why, and what it costs."""
    wrote, correct, because = SOURCE_ERRORS[error]
    return Para([Strong("The source wrote "), *wrote, "; ", Strong("the correct form is "), *correct,
                 f", because {because} ", Strong("Measured: "), *measured], note=True)


def _bias_row(study, est: str, k_pick) -> dict | None:
    rows = [r for r in study.rows if r["estimator"] == est]
    return k_pick(rows, key=lambda r: r["num_sampled"]) if rows else None


def p1_q1(s: Summary) -> list:
    g = s.source.gradient if s.source else None
    blocks = [Para([Strong("Answer. "), f"{dv.Q1_DW.text}: {dv.Q1_CASES.text}."]),
              _m(dv.Q1_DZ), _m(dv.Q1_DW), _m(dv.Q1_CASES),
              Para(["Shapes: each ∂l/∂w_i has the shape of w_i (d = 784 pixels), each ∂l/∂b_i is a scalar; "
                    "stacked over the C = 10 classes, with e_c the one-hot label:"]), _m(dv.Q1_BATCH),
              _checks(s, "softmax.")]
    if g is not None:
        blocks.append(_source("q1", [
            f"on a random problem (C = {g.classes}, d = {g.dim}, float64) the source's (C, d) gradient is off by "
            f"{fmt(100 * g.rel_err, '.0f')}% of autograd's norm (cosine {fmt(g.cosine, '.2f')}), and its true-class "
            f"row has cosine {fmt(g.true_row_cosine, '.2f')} with the correct one: a step along it lowers the "
            "true class's logit."]))
    return blocks


def p1_q2(s: Summary) -> list:
    blocks = [Para([Strong("Answer. "), f"{dv.Q2_GRAD.text}, where {dv.Q2_P.text}; n_j counts the draws of class "
                    "j, so a class drawn twice counts twice."]),
              _m(dv.Q2_D), _m(dv.Q2_P), _m(dv.Q2_GRAD),
              Para(["Shapes as in Q1: ∂l̂/∂w_j has the shape of w_j and is non-zero only for the true class and the "
                    "sampled ones, so a step touches at most K + 1 rows of W."]),
              _checks(s, "sampled.as_posed."), _checks(s, "sampled.importance.")]
    measured: list = []
    for study in s.problem1.bias:
        lo, hi = (_bias_row(study, "as_posed", pick) for pick in (min, max))
        ilo, ihi = (_bias_row(study, "importance", pick) for pick in (min, max))
        if lo and hi:
            measured.append(f"{study.title} (C = {fmt_int(study.classes)}): the as-posed loss bias is "
                            f"{fmt(lo['loss_bias'], '+.3f')} at K = {lo['num_sampled']} and "
                            f"{fmt(hi['loss_bias'], '+.3f')} at K = {hi['num_sampled']}"
                            + (f"; importance weights take it from {fmt(ilo['loss_bias'], '+.3f')} to "
                               f"{fmt(ihi['loss_bias'], '+.3f')}" if ilo and ihi else "") + ". ")
    blocks.append(_source("q2", measured + ["The as-posed bias does not shrink as K grows; the importance-weighted "
                                            "one does (Jensen's 1/K). ", Link("Bias tables", "problem-1"), "."]))
    return blocks


def p2_q1(s: Summary) -> list:
    a = s.q1
    return [Para([Strong("Answer. "), f"{acc_text(a)} test accuracy (mean ± 95% t interval over {a.n} seed(s)), "
                  f"{fmt_int(a.params)} parameters."]),
            Para([Strong("Check. "), "runs ", *run_links(s.runs_of(a.name)), "."])]


def p2_q2(s: Summary) -> list:
    a, t = s.q2, s.q2_vs_q1
    blocks = [Para([Strong("Answer. "), f"{acc_text(a)} test accuracy over {a.n} seed(s), {fmt_int(a.params)} "
                    "parameters."])]
    if t is not None and not math.isnan(t.diff_mean):
        blocks.append(Para([f"Against Q1, paired by seed: {100 * t.diff_mean:+.2f} points"
                            + ("" if math.isnan(t.diff_ci) else f" ± {100 * t.diff_ci:.2f}")
                            + f", better on {t.wins} of {len(t.seeds)} seeds; Wilcoxon signed-rank p = "
                            f"{fmt(t.p, '.2g')}" + (f" (the smallest possible with {len(t.seeds)} pairs is "
                                                    f"{fmt(min_p(len(t.seeds)), '.2g')})" if len(t.seeds) < 6
                                                   else "") + "."]))
    blocks.append(Para([Strong("Check. "), "runs ", *run_links(s.runs_of(a.name)), "."]))
    return blocks


def p2_q3(s: Summary) -> list:
    blocks = [Para([Strong("Answer. "), f"{Q3_COUNT.text} = B with B = {fmt_int(s.budget)}; its positive root, "
                    "rounded to the width whose count is nearest B:"]), _m(Q3_COUNT), _m(Q3_ROOT),
              Table("answer-q3-table", "k(L) at the budget", ["L", "k(L) exact", "width", "params", "deviation, %"],
                    [[fmt_int(r.layers), fmt(r.root, ".2f"), fmt_int(r.width), fmt_int(r.params),
                      fmt(r.deviation_pct, "+.3f")] for r in s.q3]),
              Para([Strong("Check. "), "every count is the model's own parameter count (", Code("softmaxlab params"),
                    "; tests/test_models.py builds each model and counts its tensors)."])]
    src = s.source
    if src is not None:
        fixed = dict(src.fixed_params)
        if 2 in fixed:
            w2 = next((r for r in s.q3 if r.layers == 2), None)
            blocks.append(_source("q3-count", [
                f"two hidden layers of 1024 have P(2, 1024) = {fmt_int(fixed[2])} parameters, "
                f"{fixed[2] / s.budget:.2f}x the budget"
                + (f"; the equal-parameter width is {w2.width} ({fmt_int(w2.params)})." if w2 else ".")]))
        if src.abs_roots:
            r, ratios = src.abs_roots[0], [a.params / s.budget for a in src.abs_roots]
            blocks.append(_source("q3-root", [
                f"at L = {r.layers} the negative root is {fmt(r.negative_root, '.1f')}; width {r.width} has "
                f"P = {fmt_int(r.params)} parameters, {r.params / s.budget:.1f}x the budget; over L = {r.layers}.."
                f"{src.abs_roots[-1].layers} the absolute root gives {min(ratios):.1f}x to {max(ratios):.1f}x the "
                "budget, where the positive root meets it to 0.3%."]))
    return blocks


def verdict(s: Summary) -> list:
    """Q4's one-sentence verdict from the paired tests, and what the seed count can support."""
    tests = [t for t in s.q4_tests if not math.isnan(t.p)]
    n = min((len(t.seeds) for t in s.q4_tests), default=0)
    if n < 2:  # no tests at all, or one seed
        return [Para(["With one seed per depth there is no paired test: this run cannot say whether depth helps. "
                      "Run with --seeds 10 for a verdict."], note=True)]
    fam = len(tests)
    up = [t.layers for t in tests if t.baseline_layers == 1 and t.significant and t.diff_mean > 0]
    down = [t.layers for t in tests if t.baseline_layers == 1 and t.significant and t.diff_mean < 0]
    steps = [f"{t.baseline_layers} → {t.layers} ({100 * t.diff_mean:+.2f} points)" for t in tests
             if t.baseline_layers == t.layers - 1 and t.significant]
    lst = lambda xs: ", ".join(map(str, xs))
    text = (f"Verdict (Wilcoxon signed-rank tests paired by seed, {n} seeds, Holm-adjusted over {fam} comparisons, "
            f"5% level): at {fmt_int(s.budget)} parameters, "
            + (f"L = {lst(up)} beat{'s' if len(up) == 1 else ''} one hidden layer" if up else
               "no depth beats one hidden layer significantly")
            + (f", L = {lst(down)} lose{'s' if len(down) == 1 else ''} to it" if down else "")
            + "; between neighbours, " + (f"the significant steps are {'; '.join(steps)}" if steps else
                                         "no single added layer makes a significant difference") + ".")
    blocks: list = [Para([Strong("Answer. "), text])]
    floor = min_p(n) * fam  # Holm's smallest adjusted p-value
    if floor >= 0.05:
        blocks.append(Para([f"With {n} seeds the smallest p-value a signed-rank test can give is "
                            f"{fmt(min_p(n), '.2g')} ({fmt(min(1, floor), '.2g')} after Holm over {fam} tests): "
                            "these runs cannot show any difference at the 5% level, whatever the truth. Their "
                            "intervals show the spread between seeds; they cannot support “depth helps” or “depth "
                            "hurts”. docs/results has the 10-seed study."], note=True))
    return blocks


def _tests_table(s: Summary) -> Table:
    return Table("q4-tests-table", "Q4: paired tests (test accuracy, seeds paired by number)",
                 ["L", "against", "mean difference, points", "better on", "p (Wilcoxon)", "p (Holm)", "5% level"],
                 [[fmt_int(t.layers), f"L = {t.baseline_layers}", f"{100 * t.diff_mean:+.2f}"
                   + ("" if math.isnan(t.diff_ci) else f" ± {100 * t.diff_ci:.2f}"), f"{t.wins} of {len(t.seeds)}",
                   fmt(t.p, ".2g"), fmt(t.p_holm, ".2g"), "significant" if t.significant else "no"]
                  for t in s.q4_tests])


def p2_q4(s: Summary) -> list:
    blocks = verdict(s) + [_tests_table(s), Para(["Means: " + "; ".join(f"L = {a.layers}: {acc_text(a)}"
                                                                      for a in s.q4) + ". ",
                                                  Link("Figure and table", "q4"), "."])]
    src = s.source
    if src is not None and src.fixed_params:
        L, p = max(src.fixed_params)
        fixed = {a.layers: a for a in s.q4_fixed or ()}
        eq = {a.layers: a for a in s.q4}
        measured = [f"P(L, 1024) grows from {fmt_int(min(src.fixed_params)[1])} at L = 1 to {fmt_int(p)} at "
                    f"L = {L} ({p / s.budget:.1f}x the budget), so depth and size change together. "]
        if L in fixed:
            measured.append(f"At L = {L}, width 1024 reaches {acc_text(fixed[L])} against {acc_text(eq[L])} at "
                            "equal parameters (this study's --with-fixed-width runs).")
        else:
            measured.append("This study did not train that variant: add --with-fixed-width to measure it.")
        blocks.append(_source("q4", measured))
    return blocks


def answers_section(s: Summary) -> Section:
    """An Answer per question of the assignment, in its order: the question in a line, then its blocks."""
    questions = [
        ("p1-q1", "Problem 1 Q1", "Derive ∂l/∂w_i and ∂l/∂b_i of the softmax loss l = −log p_c as functions of p_i.",
         p1_q1),
        ("p1-q2", "Problem 1 Q2", "Derive ∂l̂/∂w_i and ∂l̂/∂b_i for the sampled estimate l̂ = log D̂ − z_c, K classes "
         "drawn from q with the true class excluded.", p1_q2),
        ("p2-q1", "Problem 2 Q1", "Test accuracy of a linear softmax classifier (784 → 10) under the protocol.", p2_q1),
        ("p2-q2", "Problem 2 Q2", "Test accuracy of a 784-1024-10 MLP with one ReLU hidden layer, and how it compares "
         "with Q1.", p2_q2),
        ("p2-q3", "Problem 2 Q3", "The width k(L) that keeps L equal hidden layers at the 784-1024-10 MLP's parameter "
         "count.", p2_q3),
        ("p2-q4", "Problem 2 Q4", f"Does test accuracy change with depth L = 1..8 at {fmt_int(s.budget)} parameters?",
         p2_q4),
    ]
    return Section("answers", "Answers", [Answer(f"answer-{key}", title, question, blocks(s))
                                          for key, title, question, blocks in questions])


# ---- docs/derivations.md's Answers section, from the same formulas --------------------------------------

BEGIN = "<!-- answers:begin: generated by python scripts/derivations_answers.py -->"
END = "<!-- answers:end -->"


def answers_markdown() -> str:
    lines = [BEGIN, "", "## The answers, in one place", "", "The report's answer blocks render these very formulas "
             "(`softmaxlab/derivations.py`, `softmaxlab/report/answers.py`); the sections below derive them.", ""]
    for title, formulas in FORMULAS.items():
        lines += [f"**{title}.**", ""] + [f"$$\n{f.latex}\n$$\n" for f in formulas]
    return "\n".join(lines + [END])


def write_answers(path: Path) -> bool:
    """Replace the marked section of `path` with answers_markdown(); True if that changed the file."""
    text = path.read_text()
    pat = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pat.search(text):
        raise ValueError(f"{path} has no answers section: add the lines {BEGIN} and {END}")
    new = pat.sub(lambda m: answers_markdown(), text)
    path.write_text(new)
    return new != text

