"""The assignment's study (`softmaxlab reproduce`) and sweeps: plan, execute, summarise into a typed Summary.

The study never draws or writes the report: it returns the Summary (and writes it once, as summary.json), and
cli.py hands that to softmaxlab.report.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ..bias import bias_study
from ..derivations import source_gradient_error
from ..errors import SoftmaxlabError
from ..gradcheck import run_checks
from . import records
from .configs import ReproduceConfig, TrainConfig, parse_range, protocol
from .data import Data, load_data, to_float
from .engine import precision_note
from .models import mlp_param_count, negative_root, width_table
from .progress import study_progress
from .runner import execute
from .stats import paired_family
from .summary import (
    AbsRoot,
    Arch,
    BiasStudy,
    Check,
    Problem1,
    Run,
    SourceChecks,
    Summary,
    WidthRow,
    load_summary,
    loss_curves,
    misclassified,
    seed_diags,
    summarize,
    swap_grid,
    tuned,
)
from .train import init_model, train


def check_study(out: Path, kind: str, protocol: dict) -> None:
    """An --out folder belongs to one study: refuse to mix another study's runs into it."""
    path = out / "study.json"
    want = dict(kind=kind, protocol=protocol)
    have = records.read_json(path)
    if have is None and path.exists():
        have = records.read_json(path)  # another process may have created it between our two looks
        if have is None:
            raise SoftmaxlabError(f"{path} is unreadable: pass a fresh --out (or delete that folder)")
    if have is None:
        if not records.write_json(path, want, exclusive=True):  # another process created it since we looked
            return check_study(out, kind, protocol)
    elif have != want:
        theirs = have.get("protocol", {}) if isinstance(have, dict) else {}
        diff = sorted(k for k in set(theirs) | set(protocol) if theirs.get(k) != protocol.get(k))
        what = f"differs in {', '.join(diff)}" if diff else f"is a {have.get('kind')!r} study"
        raise SoftmaxlabError(f"--out {out} holds a different study's runs ({what}): pass a fresh --out "
                              f"or delete that folder")


def reproduce(cfg: ReproduceConfig, data_dir=None, log=print, tracker=None, progress: bool = False
              ) -> tuple[Summary, Data]:
    """Answer every question of the assignment under `cfg.out`: the runs, Problem 1's studies, the summary.
    progress: draw the overall progress line (progress.py) on stderr while the runs train.

    Returns the summary and the data (the report draws misclassified test digits from it).
    """
    cfg = cfg.resolved()
    plan, base = cfg.plan(), cfg.base()
    out = records.ensure_dir(cfg.out)
    check_study(out, "reproduce", protocol(base))
    records.write_json(out / "config.json", dataclasses.asdict(cfg))
    data = load_data(data_dir)
    unique = {records.run_id(c.identity()): c for cs in plan.values() for c in cs}
    log(f"reproduce: {len(unique)} runs ({cfg.seeds} seed(s), {cfg.epochs} epoch(s) each) -> {out}")
    if note := precision_note(base):
        log(note)
    with study_progress(out, list(unique), show=progress):
        done = execute(list(unique.values()), out, data, progress=False, log=log, tracker=tracker, workers=cfg.workers)
    results = dict(zip(unique, done))
    records.atomic_write(out / "results.csv", records.results_csv(list(results.values())))

    by_q = {q: [results[records.run_id(c.identity())] for c in cs] for q, cs in plan.items()}
    problem1 = problem1_study(cfg, out, data, by_q["q1"][0]["run_id"], log)
    q4 = tuple(summarize(by_q["q4"]))
    fixed = tuple(summarize(by_q["q4_fixed"])) if "q4_fixed" in by_q else None
    q1, q2 = summarize(by_q["q1"])[0], summarize(by_q["q2"])[0]
    archs = list({a.name: a for a in [q1, q2, *q4, *(fixed or [])]}.values())
    # the protocol's runs answer Q1-Q4; the others (diagnostic, lr extension) only their own sections
    protocol_runs = {r["run_id"]: r for q in ("q1", "q2", "q4", "q4_fixed") for r in by_q.get(q, [])}
    curves = loss_curves(by_q.get("diag", []))
    layers = parse_range(cfg.layers, "layers", 1)
    swap = by_q.get("swap", [])
    summary = Summary(
        protocol=base, config=dataclasses.asdict(cfg), seeds=cfg.seeds, quick=cfg.quick, budget=base.budget,
        provenance=records.provenance(), problem1=problem1, q1=q1, q2=q2,
        q3=tuple(WidthRow(**r) for r in width_table(layers, base.budget)),
        q4=q4, q4_fixed=fixed,
        runs=tuple(Run.of(r) for r in protocol_runs.values()),
        misclassified=tuple(misclassified(archs, list(protocol_runs.values()), data.test.y)),
        wall_time_s=sum(r["wall_time_s"] for r in results.values()) + problem1.wall_time_s,
        **comparisons(q1, q2, q4, list(protocol_runs.values()), base.budget),  # never the extension's runs
        loss_curves=curves, seed_diags=seed_diags(curves),
        swap=swap_grid(swap, swap[0]["layers"], sorted({r["config"]["init_seed"] for r in swap})) if swap else None,
        tuned=tuned(by_q["tune"], layers, cfg.lrs(), base.lr) if by_q["tune"] else (),
        extension_runs=tuple(Run.of(r) for rid, r in results.items() if rid not in protocol_runs),
    )
    records.write_json(out / "summary.json", summary)
    return summary, data


def finished(out) -> Summary:
    """The Summary of the finished study in `out` (summary.json, every run's result.json there), or a
    SoftmaxlabError saying what is missing. Reads only: `softmaxlab report` rewrites the report from it."""
    out = Path(out)
    saved = records.read_json(out / "config.json")
    if not isinstance(saved, dict) or not (out / "study.json").exists():
        raise SoftmaxlabError(f"{out} holds no study (no config.json and study.json): pass the --out folder of "
                              "`softmaxlab reproduce`")
    names = {f.name for f in dataclasses.fields(ReproduceConfig)}
    try:
        cfg = ReproduceConfig(**{k: v for k, v in saved.items() if k in names}).resolved()
    except TypeError as e:
        raise SoftmaxlabError(f"{out / 'config.json'} is not a reproduce config ({e}): pass the --out folder of "
                              "`softmaxlab reproduce`") from None
    cfg = dataclasses.replace(cfg, out=str(out))
    todo = {records.run_id(c.identity()) for cs in cfg.plan().values() for c in cs}
    missing = sorted(r for r in todo if records.read_json(out / "runs" / r / "result.json") is None)
    if missing:
        raise SoftmaxlabError(f"the study in {out} is not finished ({len(missing)} of {len(todo)} runs missing): "
                              f"run `softmaxlab reproduce` with its options and --out {out} to finish it")
    try:
        return load_summary(out / "summary.json")
    except (OSError, ValueError, TypeError, KeyError, StopIteration) as e:
        raise SoftmaxlabError(f"{out / 'summary.json'} is missing or not this version's ({type(e).__name__}): run "
                              f"`softmaxlab reproduce` with its options and --out {out} to rewrite it") from None


def accuracies(results) -> dict[str, dict[int, float]]:
    """name -> {seed: test accuracy} of the runs that finished."""
    out: dict[str, dict[int, float]] = {}
    for r in results:
        if r["status"] == "ok":
            out.setdefault(r["name"], {})[r["seed"]] = r["test_acc"]
    return out


def comparisons(q1: Arch, q2: Arch, q4: list[Arch], results: list[dict], budget: int) -> dict:
    """Summary's q2_vs_q1, q4_tests and source: the paired tests and the source's answers, measured.

    Q4's family: each depth against L = 1 and against its neighbour L - 1 (once where they coincide), Holm-adjusted
    together."""
    acc, by_l = accuracies(results), {a.layers: a for a in q4}
    pairs = [(a.name, L, by_l[b].name, b) for L, a in sorted(by_l.items())
             for b in dict.fromkeys(b for b in (1, L - 1) if b in by_l and b != L)]
    roots = [(a.layers, negative_root(a.layers, budget)) for a in q4 if a.layers >= 2]
    return dict(q2_vs_q1=paired_family([(q2.name, 1, q1.name, 0)], acc)[0], q4_tests=paired_family(pairs, acc),
                source=SourceChecks(source_gradient_error(),
                                    tuple(AbsRoot(L, r, round(abs(r)), mlp_param_count(L, round(abs(r))))
                                          for L, r in roots),
                                    tuple((a.layers, mlp_param_count(a.layers, 1024)) for a in q4)))


def mnist_logits(data: Data | None = None, state: dict | None = None, n: int = 2000, data_dir=None):
    """Logits (n, 10) and labels of a linear softmax classifier on the first n test images.

    state: the trained weights (Q1's run); None trains one for an epoch under the assignment's protocol.
    """
    data = data if data is not None else load_data(data_dir)
    if state is None:
        state = train(TrainConfig(model="linear", epochs=1), data, keep_model=True)["model"].state_dict()
    model, _ = init_model(TrainConfig(model="linear"))
    model.load_state_dict(state)
    with torch.no_grad():
        z = model(to_float(data.test.x[:n])).double()
    return z, data.test.y[:n]


def problem1_study(cfg: ReproduceConfig, out: Path, data: Data, q1_run: str, log=print) -> Problem1:
    """Gradient checks and the bias study (Q1's trained logits, C = 10; synthetic, C = bias_classes).

    Kept in problem1.json, so a resumed study does not redo it (a record, read back only here)."""
    path = out / "problem1.json"
    key = dict(bias_classes=cfg.bias_classes, quick=cfg.quick, q1_run=q1_run)
    have = records.read_json(path)
    if have is None or have.get("key") != key:
        t0 = time.perf_counter()
        checks = run_checks()
        log(f"problem 1: {sum(r['ok'] for r in checks)}/{len(checks)} gradient checks pass "
            f"(max err {max(r['max_abs_err'] for r in checks):.1e})")
        state = records.load_checkpoint(out / "runs" / q1_run / "checkpoint.pt")["model"]
        ks = (2, 4, 8) if cfg.quick else (1, 2, 4, 8)  # C = 10: K < C
        syn_ks = (8, 64, 512) if cfg.quick else (8, 64, 512, 4096)
        bias = [dict(title="MNIST logits", classes=10, sampler="uniform",
                     rows=bias_study(classes=10, samples=ks, sampler="uniform", logits=mnist_logits(data, state),
                                     seed=0)),
                dict(title="synthetic logits", classes=cfg.bias_classes, sampler="loguniform",
                     rows=bias_study(classes=cfg.bias_classes, samples=syn_ks, sampler="loguniform", seed=0))]
        log("problem 1: bias study done")
        have = dict(key=key, gradcheck=checks, bias=bias, wall_time_s=time.perf_counter() - t0)
        records.write_json(path, have)
    return Problem1(tuple(Check(**c) for c in have["gradcheck"]),
                    tuple(BiasStudy(b["title"], b["classes"], b["sampler"], tuple(b["rows"])) for b in have["bias"]),
                    q1_run, have["wall_time_s"])

