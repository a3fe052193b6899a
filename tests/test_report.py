"""The report from a realistic fake study (no training): files, tables, escaping, links, figures, determinism.

Tables are read by their header names (a row is {header: cell}), never by cell positions.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from softmaxlab import report
from softmaxlab.mnist import records as runs
from softmaxlab.mnist import summary as sums
from softmaxlab.mnist.configs import TrainConfig
from softmaxlab.mnist.models import mlp_param_count, width_table
from softmaxlab.mnist.study import comparisons
from softmaxlab.mnist.summary import BiasStudy, Check, Problem1, Run, Summary, WidthRow, misclassified, summarize
from softmaxlab.report.document import acc_ci
from softmaxlab.report.figures import FIGURES
from softmaxlab.report.html import render_html
from softmaxlab.report.markdown import render_markdown

EVIL = "<script>alert(1)</script>"
TABLE_IDS = ("q1-table", "q2-table", "q3-table", "q4-table", "gradcheck-table", "bias-table-mnist",
             "bias-table-synthetic", "provenance-table", "swap-table", "diag-table", "tuned-table",
             "extension-runs-table")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(acc: float, epochs: int, seed: int) -> list[dict]:
    return [dict(epoch=e, train_loss=0.9 / e + 0.01 * seed, val_loss=0.5 / e, val_acc=acc - 0.04 / e + 0.001 * seed,
                 epoch_time_s=2.0 + 0.1 * e) for e in range(1, epochs + 1)]


def make_study(n_test: int = 10_000) -> tuple[Summary, torch.Tensor]:
    """A Summary as study.reproduce builds it (2 seeds, L = 1..3, the fixed-width curve, one diverged run, so
    one NaN CI) from realistic result dicts, and random test images."""
    layers, epochs = [1, 2, 3], 3
    prov = dict(versions=dict(softmaxlab="0.1.0", python="3.11.7", torch="2.13.0", numpy="2.4.6"),
                git_commit="0123456789abcdef0123456789abcdef01234567+dirty",
                machine=dict(host=f"box{EVIL}", cpu="Fake CPU @ 3GHz", cores=2, platform="Linux-6.1-x86_64",
                             gpu=None),
                command=f"softmaxlab reproduce --seeds 2 --layers 1-3 --out '{EVIL}'")
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (n_test,), generator=g)
    images = torch.randint(0, 256, (n_test, 784), generator=g, dtype=torch.uint8)
    widths = {r["layers"]: r["width"] for r in width_table(layers)}
    params = {r["layers"]: r["params"] for r in width_table(layers)}
    arch = [("linear", "linear", 0, 0, 7850, 0.9210)]
    arch += [("mlp", f"mlp-L{L}-k{widths[L]}", L, widths[L], params[L], 0.978 - 0.004 * (L - 1)) for L in layers]
    arch += [("mlp", f"mlp-L{L}-k1024", L, 1024, mlp_param_count(L, 1024), 0.976 - 0.01 * L)
             for L in layers[1:]]
    results, n = [], 0
    for model, name, L, k, params, acc in arch:
        for seed in (0, 1):
            n += 1
            cfg = dict(model=model, layers=max(L, 1), width=k or None, budget=814_090, init="glorot", lr=0.01,
                       batch_size=64, epochs=epochs, seed=seed, normalize=False, train_subset=None,
                       eval_subset=None, precision="fp32", device="cpu", threads=2)
            rid = runs.run_id(dict(cfg, device=None, threads=None))
            r = dict(run_id=rid, name=name, model=model, layers=L, width=k, params=params, seed=seed,
                     precision="fp32", config=cfg, status="ok", epochs_done=epochs,
                     history=_history(acc, epochs, seed), wall_time_s=10.0 + n, train_time_s=8.0 + n,
                     device="cpu", threads=2, **prov)
            if name == "mlp-L3-k1024" and seed == 1:
                r.update(status="diverged", diverged_at=dict(epoch=2, step=17), history=r["history"][:1],
                         epochs_done=1)
            else:
                test_acc = acc + 0.002 * seed
                wrong = torch.randperm(n_test, generator=g)[: round((1 - test_acc) * n_test)].sort().values
                errors = [[int(i), (int(labels[i]) + 1 + int(i) % 9) % 10] for i in wrong]
                r.update(test_acc=test_acc, test_loss=0.3 - acc / 10, val_acc=r["history"][-1]["val_acc"],
                         val_loss=r["history"][-1]["val_loss"], test_errors=errors)
            results.append(r)
    by = lambda pred: [r for r in results if pred(r)]

    def bias_rows(classes, sampler, ks, exact):  # the shape of bias.bias_study's rows
        return [dict(estimator=est, num_sampled=K, classes=classes, sampler=sampler, n_examples=64,
                     n_draws=2000 if K < 512 else 256, exact_loss=exact, loss_mean=exact - scale / K,
                     loss_bias=-scale / K, loss_bias_se=0.01 / K, d_rel_bias=-scale / (2 * K),
                     d_rel_bias_se=math.nan if (est == "logq" and K == ks[0]) else 1e-3 / K,
                     d_rel_abs=0.3 / math.sqrt(K), grad_cosine=1 - 0.5 / K)
                for est, scale in (("as_posed", 2.0), ("importance", 0.5), ("logq", 0.2)) for K in ks]

    q4 = summarize(by(lambda r: r["model"] == "mlp" and r["width"] == widths[r["layers"]]))
    fixed = summarize(by(lambda r: r["model"] == "mlp" and r["width"] == 1024))
    q1, q2 = summarize(by(lambda r: r["model"] == "linear"))[0], q4[0]
    checks = (Check("softmax_jacobian", 2.2e-16, 1e-10, True), Check("cross_entropy_grad", 5.5e-17, 1e-10, True),
              Check(f"sampled_grad{EVIL}", math.nan, 1e-10, False))
    bias = (BiasStudy("MNIST logits", 10, "uniform", tuple(bias_rows(10, "uniform", [1, 2, 4, 8], 1.78))),
            BiasStudy("synthetic logits", 100_000, "loguniform",
                      tuple(bias_rows(100_000, "loguniform", [8, 64, 512, 4096], 7.6))))
    summary = Summary(
        protocol=TrainConfig(epochs=epochs, device="cpu"),
        config=dict(seeds=2, out=f"results{EVIL}", quick=False, with_fixed_width=True, layers="1-3", epochs=epochs),
        seeds=2, quick=False, budget=814_090, provenance=prov,
        problem1=Problem1(checks, bias, results[0]["run_id"], 12.5), q1=q1, q2=q2,
        q3=tuple(WidthRow(**r) for r in width_table(layers)), q4=tuple(q4), q4_fixed=tuple(fixed),
        runs=tuple(Run.of(r) for r in results),
        misclassified=tuple(misclassified([q1, *q4, *fixed], results, labels)), wall_time_s=123.4,
        **comparisons(q1, q2, q4, results, 814_090), **extension(results, widths, prov))
    return summary, images


def extension(protocol: list[dict], widths: dict, prov: dict) -> dict:
    """The Summary fields of issue 17 from fake runs as the study makes them: diagnostic runs at L = 1 and 3 (seed 1
    fails at L = 3: it stays on the plateau), the 2 x 2 swap grid at L = 3, the lr extension at 0.01 (the
    protocol's runs) and 0.1 (L = 3 diverges once there)."""
    def run(L, seed, acc, lr=0.01, init=None, data=None, diag=False, status="ok"):
        cfg = dict(protocol[0]["config"], model="mlp", layers=L, width=widths[L], lr=lr, seed=seed, init_seed=init,
                   data_seed=data, diagnostics=diag)
        r = dict(run_id=runs.run_id(dict(cfg, device=None, threads=None)), name=f"mlp-L{L}-k{widths[L]}",
                 model="mlp", layers=L, width=widths[L], params=814_000, seed=seed, precision="fp32", config=cfg,
                 status=status, epochs_done=3, history=_history(acc, 3, seed), wall_time_s=9.0, train_time_s=8.0,
                 device="cpu", threads=2, **prov)
        if status == "ok":
            r.update(test_acc=acc, val_acc=acc - 0.003 * (lr == 0.1), test_loss=0.2, val_loss=0.2, test_errors=[])
        if diag:
            stuck = acc < 0.5
            r["diagnostics"] = [dict(step=50 * t, epoch=1, window=50, loss=2.3 if stuck or t < 3 else 2.3 / t,
                                     dead=[0.01 * t * (1 + stuck)] * L, grad_norm=[0.1 * t] * (L + 1))
                                for t in range(1, 7)]
        return r

    acc = {(1, 0): 0.978, (1, 1): 0.976, (3, 0): 0.970, (3, 1): 0.35}  # init seed a, data seed b at L = 3:
    grid = {(0, 0): 0.970, (0, 1): 0.961, (1, 0): 0.41, (1, 1): 0.35}  # the init seed carries the spread
    diag = [run(L, s, acc[L, s], init=s, data=s, diag=True) for L in (1, 3) for s in (0, 1)]
    swap = [run(3, a, grid[a, b], init=a, data=b, diag=True) if a != b else diag[2 + a] for a in (0, 1)
            for b in (0, 1)]
    q4 = {(r["layers"], r["seed"]): r for r in protocol if r["model"] == "mlp" and r["width"] == widths[r["layers"]]}
    tune = [q4[L, s] for L in (1, 2, 3) for s in (0, 1)]
    tune += [run(L, s, q4[L, s]["test_acc"] + 0.006, lr=0.1, status="diverged" if (L, s) == (3, 1) else "ok")
             for L in (1, 2, 3) for s in (0, 1)]
    curves = sums.loss_curves(diag)
    ids = {r["run_id"] for r in protocol}
    return dict(loss_curves=curves, seed_diags=sums.seed_diags(curves), swap=sums.swap_grid(swap, 3, [0, 1]),
                tuned=sums.tuned(tune, [1, 2, 3], [0.01, 0.1], 0.01),
                extension_runs=tuple(Run.of(r) for r in {r["run_id"]: r for r in diag + swap + tune}.values()
                                     if r["run_id"] not in ids))


class _Page(HTMLParser):
    """Tables (id -> rows of cell text), element ids, img srcs, links and every start tag of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: set[str] = set()
        self._table, self._cell = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "a":
            self.hrefs.append(a.get("href", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _markdown_prose(md: str) -> str:
    """Markdown without its code (fenced blocks, code spans), which GitHub shows as literal text: what is left
    is what a renderer reads as Markdown or HTML."""
    md = re.sub(r"^(`{3,})[^\n]*\n.*?^\1\s*$", "", md, flags=re.S | re.M)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", md)


def rows(page: _Page, tid: str) -> list[dict[str, str]]:
    """A table's body rows as {header: cell text}."""
    header, *body = page.tables[tid]
    return [dict(zip(header, r)) for r in body]


def _markdown_prose(md: str) -> str:
    """Markdown without its code (fenced blocks, code spans), which GitHub shows as literal text: what is left
    is what a renderer reads as Markdown or HTML."""
    md = re.sub(r"^(`{3,})[^\n]*\n.*?^\1\s*$", "", md, flags=re.S | re.M)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", md)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    summary, images = make_study()
    paths = report.write_report(out, summary, images)
    return out, summary, images, paths


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.parent.name == "figures" or p.name.startswith("report."))}


def test_writes_every_file(study):
    out, *_, paths = study
    for name in FIGURES:
        png, svg = (out / "figures" / f"{name}.png").read_bytes(), (out / "figures" / f"{name}.svg").read_bytes()
        assert png.startswith(PNG_MAGIC), name
        assert ET.fromstring(svg).tag.endswith("}svg"), name
        assert b"<dc:date>" not in svg  # no timestamp
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    assert all(p.is_file() for p in paths.values())
    assert not list(out.rglob(".*.tmp*"))  # atomic writes leave no temp files


def test_html_is_self_contained_with_every_table(study):
    out, *_ = study
    text = (out / "report.html").read_text("utf-8")
    page = _Page(text)
    assert set(TABLE_IDS) <= set(page.tables)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}  # no JS, no external CSS
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text) and "@import" not in text
    assert len(page.imgs) == len(FIGURES)
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    for href in page.hrefs:  # every in-page link has its target
        assert href.startswith("#") and href[1:] in page.ids, href


def test_markup_in_the_summary_comes_out_escaped(study):
    out, *_ = study
    text = (out / "report.html").read_text("utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # command, host, config, a gradcheck's name
    failed = next(r for r in rows(_Page(text), "gradcheck-table") if r["result"] == "FAIL")
    assert "alert(1)" in failed["check"] and failed["max |error|"] == "n/a"  # a NaN error reads n/a
    md = (out / "report.md").read_text("utf-8")
    assert "alert(1)" in md and "<script" not in _markdown_prose(md).lower()


def test_markup_in_a_run_name_is_escaped(study):
    _, summary, *_ = study
    name = f"lin{EVIL}"
    s = dataclasses.replace(summary, q1=dataclasses.replace(summary.q1, name=name),
                            runs=tuple(dataclasses.replace(r, name=name) if r.name == "linear" else r
                                       for r in summary.runs))
    text = render_html(s, {})
    assert "<script" not in text.lower() and name.replace("<", "&lt;").replace(">", "&gt;") in text
    assert rows(_Page(text), "q1-table")[0]["name"] == name
    assert "<script" not in _markdown_prose(render_markdown(s, [])).lower()


def test_tables_say_what_the_summary_says(study):
    out, s, *_ = study
    page = _Page((out / "report.html").read_text("utf-8"))
    acc = "test accuracy, % (mean ± 95% CI)"
    (q1,) = rows(page, "q1-table")
    assert q1[acc] == f"{100 * s.q1.test_acc_mean:.2f} ± {100 * s.q1.test_acc_ci:.2f}" and q1["n"] == "2"
    assert rows(page, "q2-table")[0]["params"] == "814,090"
    q3 = rows(page, "q3-table")
    assert [r["L"] for r in q3] == ["1", "2", "3"]
    assert [r["chosen width k"] for r in q3] == [f"{r.width:,}" for r in s.q3]
    q4 = {r["L"]: r for r in rows(page, "q4-table")}
    assert sorted(q4) == ["1", "2", "3"] and "fixed: test accuracy, %" in q4["1"]  # equal and fixed columns
    fixed3 = next(a for a in s.q4_fixed if a.layers == 3)
    assert fixed3.n == 1 and math.isnan(fixed3.test_acc_ci)
    assert q4["3"]["fixed: test accuracy, %"] == f"{100 * fixed3.test_acc_mean:.2f} ± n/a"  # NaN CI
    assert q4["3"]["fixed: diverged"] == "1"
    mnist = page.tables["bias-table-mnist"]
    assert mnist[0][:3] == ["estimator", "K", "loss bias"]
    body = rows(page, "bias-table-mnist")
    assert len(body) == 12 and [r["K"] for r in body[:4]] == ["1", "2", "4", "8"]
    assert "classes" not in mnist[0] and "exact loss" not in mnist[0]  # the same in every row: said once
    assert "n draws" not in mnist[0] and "n draws" in page.tables["bias-table-synthetic"][0]  # varies there
    assert "n/a" in [r["d rel bias se"] for r in body]  # the NaN standard error
    prov = rows(page, "provenance-table")
    assert {r["run id"] for r in prov} == {r.run_id for r in s.runs}
    assert any(r["status"] == "divergedat epoch 2, step 17" for r in prov)


def test_markdown_links_are_files(study):
    out, *_ = study
    md = (out / "report.md").read_text("utf-8")
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert {f"figures/{n}.png" for n in FIGURES} <= set(links)
    assert all((out / link).is_file() for link in links)
    for tid in ("Q1: linear", "Q3: width", "Q4: test accuracy", "Runs"):
        assert f"**{tid}" in md
    assert "± n/a" in md
    assert "**Protocol.** MNIST" in md and "**Gradient checks.** " in md  # CommonMark bold: no space inside


def test_same_inputs_same_bytes(study, tmp_path):
    """A second call into another folder gives the same bytes: a resumed study rewrites an identical report."""
    out, summary, images, _ = study
    report.write_report(tmp_path, summary, images)
    assert _files(tmp_path) == _files(out)


def test_misclassified_digits_are_the_best_and_worst_models(study):
    _, s, *_ = study
    assert [(m.label, m.arch.name, m.seed) for m in s.misclassified] == [("best", s.q2.name, 0), ("worst", "linear", 0)]
    for m in s.misclassified:
        assert len(m.errors) == 24 and [i for i, *_ in m.errors] == sorted(i for i, *_ in m.errors)
        assert all(true != pred for _, true, pred in m.errors)


def test_one_seed_and_no_fixed_width_still_render(tmp_path):
    """One seed (every CI NaN) and no fixed-width curve: the report says n/a and drops the fixed columns."""
    summary, images = make_study(n_test=100)
    one = lambda a: dataclasses.replace(a, n=1, seeds=(0,), test_acc_ci=math.nan, test_acc_std=math.nan)
    s = dataclasses.replace(summary, seeds=1, q1=one(summary.q1), q2=one(summary.q2),
                            q4=tuple(one(a) for a in summary.q4), q4_fixed=None,
                            runs=tuple(r for r in summary.runs if r.seed == 0 and "k1024" not in r.name))
    paths = report.write_report(tmp_path / "out", s, images)
    assert "accuracy_vs_layers.png" in paths
    page = _Page(paths["report.html"].read_text("utf-8"))
    assert "fixed width" not in page.tables["q4-table"][0]
    assert rows(page, "q1-table")[0]["test accuracy, % (mean ± 95% CI)"].endswith("± n/a")


def test_why_seeds_differ_says_what_the_summary_says(study):
    """The swap-grid sentence, the diagnostics table and the lr extension, read by named values."""
    out, s, *_ = study
    text = (out / "report.html").read_text("utf-8")
    page = _Page(text)
    g = s.swap
    assert g.init_share > 0.9 > g.data_share  # the fake's init seed carries the spread
    assert g.init_share + g.data_share + g.resid_share == pytest.approx(1)
    assert (f"the initialisation carries {100 * g.init_share:.0f}%, the data order {100 * g.data_share:.0f}%"
            in text and "the initialisation drives more of the spread than the data order" in text)
    swap = {r["init seed"]: r for r in rows(page, "swap-table")}
    assert swap["1"]["data 0"] == "41.00" and swap["1"]["row mean"] == "38.00" and swap["mean"]["data 1"] == "65.55"
    diag = {r["seed"]: r for r in rows(page, "diag-table")}  # L = 3: seed 1 stays on the plateau
    assert diag["1"]["failing"] == "yes" and diag["1"]["left the plateau at step"] == "never"
    assert diag["0"]["failing"] == "no" and diag["0"]["left the plateau at step"] == "150"
    assert diag["1"]["dead, % last"] == "12.00" and diag["0"]["grad norm first"] == "0.1"
    tuned = {r["L"]: r for r in rows(page, "tuned-table")}
    assert [tuned[L]["chosen lr"] for L in "123"] == ["0.1", "0.1", "0.01"]  # L = 3 diverged once at 0.1
    assert tuned["3"]["val acc, % at lr 0.1"] == "diverged 1"
    t1 = next(t for t in s.tuned if t.layers == 1)
    assert tuned["1"]["chosen lr: test accuracy, % (mean ± 95% CI)"] == acc_ci(t1.test)
    assert t1.test.test_acc_mean == pytest.approx(s.q4[0].test_acc_mean + 0.006)
    assert tuned["1"]["lr 0.01: test accuracy, % (mean ± 95% CI)"] == acc_ci(s.q4[0])  # the protocol's own runs
    assert "Extension: not the assignment's protocol." in html.unescape(text)
    ext = rows(page, "extension-runs-table")
    assert len(ext) == len(s.extension_runs) == 4 + 2 + 6  # diagnostic, the swap grid's off-diagonal, lr 0.1
    assert {r["run id"] for r in ext}.isdisjoint(r.run_id for r in s.runs)
    assert {f"run-{r.run_id}" for r in s.extension_runs} <= page.ids
    md = (out / "report.md").read_text("utf-8")
    assert "figures/loss_curves.png" in md and "figures/deep_diagnostics.png" in md


def test_lr_choice_uses_validation_and_skips_diverged():
    """The extension picks the lr of best mean validation accuracy among those without a diverged run."""
    def r(L, lr, seed, val, test, status="ok"):
        return dict(run_id=f"{L}{lr}{seed}", name=f"mlp-L{L}", model="mlp", layers=L, width=8, params=10,
                    seed=seed, status=status, config=dict(lr=lr), val_acc=val, test_acc=test)
    res = [r(1, 0.01, s, 0.90, 0.95) for s in (0, 1)] + [r(1, 0.1, s, 0.92, 0.80) for s in (0, 1)]
    res += [r(1, 0.3, 0, 0.99, 0.99), r(1, 0.3, 1, None, None, "diverged")]
    (t,) = sums.tuned(res, [1], [0.01, 0.1, 0.3], 0.01)
    assert t.chosen_lr == 0.1 and t.test.test_acc_mean == pytest.approx(0.80)  # validation decides, not test
    assert t.diverged == (0, 0, 1) and math.isnan(t.val_acc[2]) and t.protocol.test_acc_mean == pytest.approx(0.95)


def test_swap_grid_decomposition():
    """Additive rows and columns: the shares are their sums of squares; the residual is the interaction."""
    rows_, cols = [0.0, 0.02, 0.10], [0.0, 0.01, -0.01]
    res = [dict(test_acc=0.9 + a + b, config=dict(init_seed=i, data_seed=j)) for i, a in enumerate(rows_)
           for j, b in enumerate(cols)]
    g = sums.swap_grid(res, 8, [0, 1, 2])
    m_r, m_c = sum(rows_) / 3, sum(cols) / 3
    ss_r, ss_c = 3 * sum((a - m_r) ** 2 for a in rows_), 3 * sum((b - m_c) ** 2 for b in cols)
    assert g.init_share == pytest.approx(ss_r / (ss_r + ss_c)) and g.resid_var == pytest.approx(0, abs=1e-15)
    assert g.init_var == pytest.approx(ss_r / 3 / 2) and g.data_var == pytest.approx(ss_c / 3 / 2)
    res[4]["test_acc"] += 0.03  # an interaction at (1, 1)
    g = sums.swap_grid(res, 8, [0, 1, 2])
    assert g.resid_share > 0 and g.init_share + g.data_share + g.resid_share == pytest.approx(1)
    assert sums.swap_grid(res[:1], 8, [0]) is None


def test_no_extension_no_section(tmp_path):
    """--no-diagnose --tune-lrs none: no "why seeds differ" section, no diagnostic figures."""
    summary, images = make_study(n_test=100)
    s = dataclasses.replace(summary, loss_curves=(), seed_diags=(), swap=None, tuned=(), extension_runs=())
    paths = report.write_report(tmp_path / "out", s, images)
    assert "loss_curves.png" not in paths and "accuracy_vs_layers.png" in paths
    page = _Page(paths["report.html"].read_text("utf-8"))
    assert "q4-seeds" not in page.ids and "tuned-table" not in page.tables


def test_summary_with_the_extension_loads_back_typed(study, tmp_path):
    """summary.json with issue 17's fields reads back as the same typed Summary (the `report` command's input)."""
    from softmaxlab.mnist.diagnostics import DiagPoint

    _, s, *_ = study
    runs.write_json(tmp_path / "a.json", s)
    back = sums.load_summary(tmp_path / "a.json")
    assert isinstance(back.loss_curves[0].points[0], DiagPoint) and back.loss_curves[0].steps == s.loss_curves[0].steps
    assert isinstance(back.swap, sums.SwapGrid) and back.swap.acc == s.swap.acc
    assert isinstance(back.tuned[0].test, sums.Arch) and isinstance(back.extension_runs[0], Run)
    runs.write_json(tmp_path / "b.json", back)
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
