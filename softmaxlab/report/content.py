"""What the report says: the document (document.py's blocks) built from the study's typed Summary."""

from __future__ import annotations

import json
import math
import re

from ..mnist.summary import DIAG_EVERY, ESCAPE_LOSS, FAIL_GAP, PROBE, Arch, Summary
from .answers import answers_section
from .document import (
    Aside,
    Badge,
    Code,
    Details,
    Figure,
    Link,
    Para,
    Section,
    Strong,
    Table,
    acc_ci,
    acc_text,
    duration,
    fmt,
    fmt_cell,
    fmt_int,
    pct,
    run_links,
)

ACC = "test accuracy, % (mean ± 95% CI)"


def document(s: Summary) -> tuple[list, list[Section]]:
    """(intro blocks, sections) of the report."""
    return intro(s), [answers_section(s), problem1_section(s), q12_section(s), q3_section(s), q4_section(s),
                      *why_seeds_section(s),
                      curves_section(), misclassified_section(s), provenance_section(s)]


def subtitle(s: Summary) -> str:
    command = re.sub(r"^__main__\.py\b", "softmaxlab", s.provenance["command"])  # recorded before command_line
    return (f"Made by {command} ({len(s.runs)} protocol runs); commit "
            f"{s.provenance['git_commit']}; compute time {duration(s.wall_time_s)}.")


def _best(archs) -> Arch | None:
    ok = [a for a in archs if not math.isnan(a.test_acc_mean)]
    return max(ok, key=lambda a: (a.test_acc_mean, -a.layers)) if ok else None


def intro(s: Summary) -> list:
    p = s.protocol
    layers = sorted({a.layers for a in s.q4})
    lrange = f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else ", ".join(map(str, layers))
    blocks: list = [
        Para(["This report answers CS 7150 Homework 2 with numbers measured by ", Code("softmaxlab reproduce"),
              ". Problem 1 is about the softmax and the sampled softmax: the hand-written gradients are checked "
              "against torch.autograd in float64, and the sampled-softmax loss (as posed, importance-weighted, and "
              "with the log-q correction) is compared with the full softmax loss as the number of sampled classes "
              "K grows. Problem 2 compares on MNIST a linear softmax classifier (Q1) with a 784-1024-10 ReLU MLP "
              f"(Q2), finds for each depth L the width that keeps L equal hidden layers at the MLP's "
              f"{fmt_int(s.budget)} parameters (Q3), and trains those MLPs for L = {lrange} to see how test accuracy "
              "changes with depth at a fixed parameter budget (Q4)."]),
        Para([Strong("Protocol. "), "MNIST's 60,000 training images split 50,000 / 10,000 into training and "
              "validation (random_split, generator seed 0); accuracy is measured on the 10,000 test images. SGD, "
              f"batch {fmt_int(p.batch_size)}, learning rate {fmt(p.lr, 'g')}, {fmt_int(p.epochs)} epoch(s), "
              f"{p.init} initialisation, {p.precision}; {fmt_int(s.seeds)} seed(s) per architecture. "
              "Accuracies are the mean ± the half-width of the 95% Student-t interval over seeds (n/a with one "
              "seed); diverged runs are counted apart and left out of the mean."]),
    ]
    if s.quick or p.train_subset or p.eval_subset:
        blocks.append(Para([Strong("Quick smoke test: "), "trained on the first "
                            f"{fmt_int(p.train_subset or 50000)} training images and evaluated on the "
                            f"first {fmt_int(p.eval_subset or 10000)} validation and test images. "
                            "These numbers check the pipeline; they are not the study's results."], note=True))
    best = _best(s.q4)
    glance = [("Q1 linear", s.q1), ("Q2 MLP 784-1024-10", s.q2)]
    glance += [(f"Q4 best depth (L = {best.layers})", best)] if best is not None else []
    blocks.append(Table("glance-table", "Results at a glance", ["question", "model", ACC, "n"],
                        [[q, a.name, acc_ci(a), fmt_int(a.n)] for q, a in glance]))
    return blocks


def _bias_table(key: str, study) -> list:
    """A bias study's rows: estimator, K and the loss bias first, each x_se right after its x; a column with one
    value in every row (classes, sampler, the exact loss) is said once, under the table."""
    rows = study.rows
    lead = ["estimator", "num_sampled", "loss_bias"]
    rest = sorted(c for c in rows[0] if c not in lead)  # by name: summary.json (sorted keys) reads the same
    same = [c for c in rest if len(rows) > 1 and len({fmt_cell(r[c]) for r in rows}) == 1]
    cols: list[str] = []
    for c in lead + [c for c in rest if c not in same]:
        if c not in cols and not (c.endswith("_se") and c[:-3] in rows[0]):
            cols += [c] + ([f"{c}_se"] if f"{c}_se" in rest and f"{c}_se" not in same else [])
    caption = f"{study.title[0].upper()}{study.title[1:]}: C = {fmt_int(study.classes)} classes, " \
              f"{study.sampler} sampler"
    headers = ["K" if c == "num_sampled" else c.replace("_", " ") for c in cols]
    blocks: list = [Table(f"bias-table-{key}", caption, headers, [[fmt_cell(r[c]) for c in cols] for r in rows])]
    if same:
        blocks.append(Para(["In every row: " + ", ".join(f"{c.replace('_', ' ')} = {fmt_cell(rows[0][c])}"
                                                         for c in same) + "."]))
    return blocks


def problem1_section(s: Summary) -> Section:
    p1 = s.problem1
    passed = sum(c.ok for c in p1.gradcheck)
    worst = max((c.max_abs_err for c in p1.gradcheck), default=math.nan)
    blocks: list = [
        Para([Strong("Gradient checks. "), f"{passed} of {len(p1.gradcheck)} hand-written gradients match "
              f"torch.autograd in float64 (largest absolute error {fmt(worst, '.2e')})."]),
        Table("gradcheck-table", "Gradient checks against torch.autograd (float64)",
              ["check", "max |error|", "tolerance", "result"],
              [[c.name, fmt(c.max_abs_err, ".2e"), fmt(c.tol, ".0e"), Badge("pass" if c.ok else "FAIL", c.ok)]
               for c in p1.gradcheck]),
        Para([Strong("Sampled-softmax bias. "), "Each table compares the sampled-softmax estimators with the full "
              "softmax for K sampled classes; the loss bias is the mean sampled loss minus the full loss (0 is "
              "unbiased)."]),
    ]
    for key, study in zip(("mnist", "synthetic"), p1.bias):
        blocks += _bias_table(key, study)
        if key == "mnist":
            blocks.append(Para(["Logits of Q1's trained linear classifier on MNIST test images (run ",
                                Link(p1.q1_run, f"run-{p1.q1_run}"), ")."]))
    blocks.append(Figure("bias_vs_k", "Sampled-softmax loss bias against the number of sampled classes K "
                         "(log x), per estimator; MNIST logits (C = 10) and synthetic logits. The y axis is |bias| "
                         "(log); filled markers: the sampled loss is below the full loss, open markers: above."))
    return Section("problem-1", "Problem 1: softmax and sampled softmax", blocks)


def _arch_table(s: Summary, a: Arch, tid: str, caption: str) -> Table:
    return Table(tid, caption, ["model", "name", "hidden layers", "width", "params", ACC, "std, pp", "n",
                                "diverged", "runs"],
                 [[a.model, a.name, fmt_int(a.layers), fmt_int(a.width), fmt_int(a.params), acc_ci(a),
                   pct(a.test_acc_std), fmt_int(a.n), fmt_int(a.diverged), run_links(s.runs_of(a.name))]])


def q12_section(s: Summary) -> Section:
    q1, q2 = s.q1, s.q2
    blocks: list = [_arch_table(s, q1, "q1-table", "Q1: linear softmax classifier (784 → 10)"),
                    _arch_table(s, q2, "q2-table", "Q2: MLP 784-1024-10 with one ReLU hidden layer")]
    if not math.isnan(q1.test_acc_mean) and not math.isnan(q2.test_acc_mean):
        blocks.append(Para([f"The MLP's mean test accuracy is {100 * (q2.test_acc_mean - q1.test_acc_mean):+.2f} "
                            f"percentage points from the linear classifier's, with {q2.params / q1.params:.0f}x its "
                            "parameters."]))
    return Section("q1-q2", "Q1 and Q2: linear classifier vs one-hidden-layer MLP", blocks)


def q3_section(s: Summary) -> Section:
    return Section("q3", "Q3: equal-parameter widths", [
        Para(["L equal hidden layers of width k have (L-1)k² + (L + 794)k + 10 parameters. The exact root of that "
              f"count = {fmt_int(s.budget)} is rounded to the integer width whose count is nearest the budget."]),
        Table("q3-table", f"Q3: width that keeps L hidden layers at {fmt_int(s.budget)} parameters",
              ["L", "exact root k*", "chosen width k", "params", "deviation", "deviation, %"],
              [[fmt_int(r.layers), fmt(r.root, ".3f"), fmt_int(r.width), fmt_int(r.params), fmt(r.deviation, "+,.0f"),
                fmt(r.deviation_pct, "+.4f")] for r in s.q3]),
        Figure("params_vs_layers", "Parameters against depth L: equal-parameter widths (Q3) vs width 1024 for "
               "every L (log y); the linear classifier for reference.")])


def q4_section(s: Summary) -> Section:
    fixed = {a.layers: a for a in s.q4_fixed or ()}
    headers = ["L", "width", "params", ACC, "n", "diverged"]
    if s.q4_fixed is not None:
        headers += ["fixed width", "fixed params", "fixed: test accuracy, %", "fixed: n", "fixed: diverged"]
    cells = lambda a: [fmt_int(a.width), fmt_int(a.params), acc_ci(a), fmt_int(a.n), fmt_int(a.diverged)]
    rows = []
    for a in s.q4:
        row, links = [fmt_int(a.layers), *cells(a)], run_links(s.runs_of(a.name))
        if s.q4_fixed is not None:
            f = fixed.get(a.layers)
            row += ["n/a"] * 5 if f is None else cells(f)
            if f is not None and f.name != a.name:
                links = links + [" | "] + run_links(s.runs_of(f.name))
        rows.append(row + [links])
    caption = f"Q4: test accuracy against depth L at {fmt_int(s.budget)} parameters"
    if s.q4_fixed is not None:
        caption += ", and with width 1024 for every L (the assignment's own code)"
    blocks: list = [Table("q4-table", caption, headers + ["runs"], rows)]
    best = _best(s.q4)
    if best is not None:
        worst = min((a for a in s.q4 if not math.isnan(a.test_acc_mean)), key=lambda a: (a.test_acc_mean, a.layers))
        blocks.append(Para([f"At equal parameters the best depth is L = {best.layers} ({acc_text(best)}), the worst "
                            f"L = {worst.layers} ({acc_text(worst)})."]))
    caption = ("Test accuracy against depth L: every seed a point (jittered), the mean with 95% t-interval error "
               "bars, the median a bar; the band is the linear classifier (Q1), mean ± 95% CI.")
    if any(t.test is not None for t in s.tuned):
        caption += (" Dotted: the extension (not the assignment's protocol), each L at the learning rate chosen on "
                    "validation (section \"Q4: why seeds differ\").")
    blocks.append(Figure("accuracy_vs_layers", caption))
    return Section("q4", "Q4: test accuracy vs depth", blocks)


def why_seeds_section(s: Summary) -> list[Section]:
    """Q4's spread over seeds: the swap grid's decomposition, the diagnostic runs, the per-L lr extension.
    No section when the study trained none of them (--no-diagnose, --tune-lrs none)."""
    blocks: list = [*_swap_blocks(s), *_diag_blocks(s), *_tuned_blocks(s)]
    return [Section("q4-seeds", "Q4: why seeds differ", blocks + _extension_runs(s))] if blocks else []


def _swap_blocks(s: Summary) -> list:
    g = s.swap
    if g is None:
        return []
    n, pp2 = len(g.seeds), lambda v: fmt(1e4 * v, ".3g")  # variances of fractions, in (percentage points)^2
    if math.isnan(g.init_share):
        lead = Para([Strong("Initialisation or data order? "), f"A run of the {n} × {n} grid at L = {g.layers} "
                     "diverged: no decomposition."])
    else:
        big, small = (("initialisation", "data order") if g.init_share >= g.data_share
                      else ("data order", "initialisation"))
        lead = Para([Strong("Initialisation or data order? "), f"At L = {g.layers}, the {n} × {n} grid crosses "
                     f"initialisation seeds a with data-order (shuffle) seeds b, {n * n} runs. The variance of the "
                     f"initialisation seeds' mean test accuracy (rows) is {pp2(g.init_var)} pp², that of the data "
                     f"orders' (columns) {pp2(g.data_var)} pp², the residual (interaction) {pp2(g.resid_var)} pp²; "
                     f"of the grid's total sum of squares the initialisation carries {pct(g.init_share, 0)}%, the "
                     f"data order {pct(g.data_share, 0)}% and the residual {pct(g.resid_share, 0)}%: the {big} "
                     f"drives more of the spread than the {small}."])
    rows = [[fmt_int(a), *[pct(v) for v in g.acc[i]], pct(sum(g.acc[i]) / n)] for i, a in enumerate(g.seeds)]
    rows.append(["mean", *[pct(sum(r[j] for r in g.acc) / n) for j in range(n)], pct(sum(map(sum, g.acc)) / n / n)])
    return [lead, Table("swap-table", f"Test accuracy, %, at L = {g.layers}: initialisation seed (rows) × data-order "
                        "seed (columns)", ["init seed", *[f"data {b}" for b in g.seeds], "row mean"], rows)]


def _diag_blocks(s: Summary) -> list:
    if not s.loss_curves:
        return []
    blocks: list = [Figure("loss_curves", f"Training loss (mean over each {DIAG_EVERY}-step window) against step for "
                           "every seed of the diagnostic runs (initialisation seed = data seed = seed: the protocol's "
                           f"numbers); failing seeds (test accuracy more than {pct(FAIL_GAP, 0)} pp below the best "
                           "seed at that depth) in red.")]
    if not s.seed_diags:
        return blocks
    deep = max(d.layers for d in s.seed_diags)
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan
    caption = (f"L = {deep}: each seed's exit from the plateau (the first window under {fmt(ESCAPE_LOSS, 'g')} nats), "
               f"dead ReLUs (units silent on all {fmt_int(PROBE)} probe images, mean over hidden layers) and the first "
               "layer's gradient norm, at the first and the last point")
    headers = ["seed", "test acc, %", "failing", "left the plateau at step", "dead, % first", "dead, % last",
               "grad norm first", "grad norm last", "run"]
    rows = [[fmt_int(d.seed), pct(d.test_acc), "yes" if d.failing else "no",
             "never" if d.escape_step is None else fmt_int(d.escape_step), pct(mean(d.dead_first)),
             pct(mean(d.dead_last)), fmt(d.grad_first[0], ".3g"), fmt(d.grad_last[0], ".3g"),
             Link(d.run_id, f"run-{d.run_id}")]
            for d in sorted((d for d in s.seed_diags if d.layers == deep), key=lambda d: d.seed)]
    return blocks + [Table("diag-table", caption, headers, rows),
                     Figure("deep_diagnostics", f"L = {deep}: dead-ReLU fraction and the first layer's weight-gradient "
                            "norm against step, failing seeds in red.")]


def _tuned_blocks(s: Summary) -> list:
    if not s.tuned:
        return []
    lrs = s.tuned[0].lrs
    rows = [[fmt_int(t.layers), "n/a" if t.chosen_lr is None else fmt(t.chosen_lr, "g"),
             *[f"diverged {d}" if d else pct(v) for v, d in zip(t.val_acc, t.diverged)],
             "n/a" if t.test is None else acc_ci(t.test), "n/a" if t.protocol is None else acc_ci(t.protocol),
             fmt_int(t.test.n if t.test is not None else 0)] for t in s.tuned]
    return [Para([Strong("Extension: not the assignment's protocol. "), "For each L the equal-parameter MLP is "
                  f"trained at learning rates {', '.join(fmt(lr, 'g') for lr in lrs)} over the same seeds; the lr "
                  "with the best mean validation accuracy is chosen per L (the test set plays no part in the "
                  "choice; an lr with a diverged run is not chosen), and its test accuracy is reported."]),
            Table("tuned-table", "Extension (not the assignment's protocol): per-L learning rate chosen on "
                  "validation", ["L", "chosen lr", *[f"val acc, % at lr {fmt(lr, 'g')}" for lr in lrs],
                                 "chosen lr: " + ACC, f"lr {fmt(s.protocol.lr, 'g')}: " + ACC, "n"], rows)]


def _extension_runs(s: Summary) -> list:
    runs = sorted(s.extension_runs, key=lambda r: (r.name, r.lr, r.init_seed, r.data_seed, r.seed, r.run_id))
    if not runs:
        return []
    rows = [[Code(r.run_id), r.name, fmt(r.lr, "g"), fmt_int(r.seed if r.init_seed is None else r.init_seed),
             fmt_int(r.seed if r.data_seed is None else r.data_seed), "yes" if r.diagnostics else "no",
             Badge(r.status, r.status == "ok"), pct(r.test_acc), pct(r.val_acc)] for r in runs]
    return [Table("extension-runs-table", "Runs of this section that are not protocol runs (records under runs/)",
                  ["run id", "name", "lr", "init seed", "data seed", "diagnostics", "status", "test acc, %",
                   "val acc, %"], rows, [f"run-{r.run_id}" for r in runs])]


def curves_section() -> Section:
    return Section("learning-curves", "Learning curves", [
        Figure("learning_curves", "Validation accuracy and training loss per epoch, mean over the seeds that "
               "finished, per model.")])


def misclassified_section(s: Summary) -> Section:
    blocks: list = [Para([Strong(f"{m.label.capitalize()}: "), f"{m.arch.name} ({acc_text(m.arch)} mean test "
                          f"accuracy); digits from its seed {m.seed} run ", Link(m.run_id, f"run-{m.run_id}"), "."])
                    for m in s.misclassified]
    blocks.append(Figure("misclassified", "Misclassified test digits (first ones by test index) of the best and "
                         "the worst model, labelled true → predicted."))
    return Section("misclassified", "Misclassified digits", blocks)


def provenance_section(s: Summary) -> Section:
    prov, mach = s.provenance, s.provenance["machine"]
    order = {r.name: i for i, r in enumerate(s.archs())}
    runs = sorted(s.runs, key=lambda r: (order.get(r.name, len(order)), r.name, r.seed, r.run_id))
    kv = [["command", Code(prov["command"])], ["git commit", Code(prov["git_commit"])]]
    kv += [[f"{k} version", str(v)] for k, v in sorted(prov["versions"].items())]
    keys = ["host", "cpu", "cores", "gpu", "platform"]
    kv += [[k, "none" if mach[k] is None else str(mach[k])]
           for k in sorted(mach, key=lambda k: (keys.index(k) if k in keys else len(keys), k))]
    kv += [["compute time (runs + Problem 1)", duration(s.wall_time_s)],
           ["Problem 1 time", duration(s.problem1.wall_time_s)],
           ["runs", f"{len(runs)} ({sum(r.status != 'ok' for r in runs)} diverged), "
                    f"{duration(sum(r.wall_time_s for r in runs))} of training wall time"]]
    blocks: list = [
        Para(["Every number above comes from the runs below; each run's resolved config, versions, commit, "
              "machine and command are recorded with it (expand a run under the table)."]),
        Table("provenance-summary", "This report's study", ["what", "value"], kv),
        Details("resolved study config (JSON)", json.dumps(s.config, indent=2, sort_keys=True)),
    ]
    rows = []
    for r in runs:
        status: list = [Badge(r.status, r.status == "ok")]
        if r.diverged_at is not None:
            status.append(Aside(f"at epoch {r.diverged_at['epoch']}, step {r.diverged_at['step']}"))
        rows.append([Code(r.run_id), r.name, fmt_int(r.seed), status, pct(r.test_acc), pct(r.val_acc),
                     fmt_int(r.params), fmt_int(len(r.history)), fmt(r.wall_time_s, ".1f"), fmt(r.train_time_s, ".1f"),
                     f"{r.device} ({fmt_int(r.threads)} threads)",
                     Code(r.git_commit[:8] + ("+dirty" if r.git_commit.endswith("+dirty") else ""))])
    details = [Details(f"run {r.run_id}: {r.name} seed {r.seed}", json.dumps(r.record, indent=2, sort_keys=True))
               for r in runs]
    blocks.append(Table("provenance-table", "Runs", ["run id", "name", "seed", "status", "test acc, %", "val acc, %",
                                                     "params", "epochs", "wall time, s", "train time, s", "device",
                                                     "commit"], rows, [f"run-{r.run_id}" for r in runs], details))
    return Section("provenance", "Appendix: provenance and code", blocks)
