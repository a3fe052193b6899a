"""The study's typed summary: what `reproduce` hands the report (and writes once, as summary.json).

Frozen dataclasses all the way down; the report reads their fields and guesses nothing. Accuracies are a
mean with the half-width of the 95% Student-t interval over seeds (stats.mean_ci), NaN with one seed;
Q4's verdict rests on paired tests (stats.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..derivations import GradientError
from .configs import TrainConfig
from .diagnostics import DIAG_EVERY, PROBE, DiagPoint  # noqa: F401  (DIAG_EVERY, PROBE: for the report)
from .stats import PairedTest, mean_ci

MISCLASSIFIED_SHOWN = 24  # digits per model in the report's figure


@dataclass(frozen=True)
class Arch:
    """One architecture over its seeds (diverged runs counted apart, left out of the mean)."""

    name: str
    model: str
    layers: int
    width: int
    params: int
    seeds: tuple[int, ...]
    diverged: int
    n: int  # runs that finished
    test_acc_mean: float  # fraction; NaN if none finished
    test_acc_ci: float  # 95% CI half-width; NaN with fewer than 2
    test_acc_std: float


def summarize(results: list[dict]) -> list[Arch]:
    """One Arch per architecture, linear first, then by depth and width."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    rows = []
    for name, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        m, sd, ci = mean_ci([r["test_acc"] for r in ok])
        rows.append(Arch(name, rs[0]["model"], rs[0]["layers"], rs[0]["width"], rs[0]["params"],
                         tuple(sorted(r["seed"] for r in rs)), len(rs) - len(ok), len(ok), m, ci, sd))
    return sorted(rows, key=lambda r: (r.model != "linear", r.layers, r.width))


@dataclass(frozen=True)
class Run:
    """One run's result.json, the fields the report shows (record: its provenance, shown as JSON)."""

    run_id: str
    name: str
    seed: int
    status: str  # ok or diverged
    test_acc: float | None  # None: diverged
    val_acc: float | None
    params: int
    history: tuple[dict, ...]  # per epoch: epoch, train_loss, val_loss, val_acc, epoch_time_s
    wall_time_s: float
    train_time_s: float
    device: str
    threads: int
    git_commit: str
    diverged_at: dict | None  # epoch, step
    record: dict
    lr: float = math.nan
    init_seed: int | None = None  # None: seed (every run recorded before the seed split)
    data_seed: int | None = None
    diagnostics: bool = False

    @staticmethod
    def of(r: dict) -> Run:
        keep = ("run_id", "name", "seed", "config", "versions", "git_commit", "machine", "command",
                "diverged_at", "epochs_done", "history")
        cfg = r["config"]
        return Run(r["run_id"], r["name"], r["seed"], r["status"], r.get("test_acc"), r.get("val_acc"),
                   r["params"], tuple(r["history"]), r["wall_time_s"], r["train_time_s"], r["device"],
                   r["threads"], r["git_commit"], r.get("diverged_at"), {k: r[k] for k in keep if k in r},
                   lr=cfg["lr"], init_seed=cfg.get("init_seed"), data_seed=cfg.get("data_seed"),
                   diagnostics=cfg.get("diagnostics", False))  # records older than these fields lack them


@dataclass(frozen=True)
class Misclassified:
    """A model's first misclassified test digits (by test index), from one of its runs."""

    label: str  # best or worst
    arch: Arch
    run_id: str
    seed: int
    n_errors: int
    errors: tuple[tuple[int, int, int], ...]  # (test index, true label, predicted), the first MISCLASSIFIED_SHOWN


def misclassified(archs: list[Arch], results: list[dict], test_labels) -> Iterator[Misclassified]:
    """The best and the worst model by mean test accuracy, each from its lowest-seed run that finished."""
    scored = [a for a in archs if not math.isnan(a.test_acc_mean)]
    if not scored:
        return
    best = max(scored, key=lambda a: (a.test_acc_mean, a.name))
    worst = min(scored, key=lambda a: (a.test_acc_mean, a.name))
    for label, a in [("best", best)] + ([("worst", worst)] if worst is not best else []):
        r = min((r for r in results if r["name"] == a.name and r["status"] == "ok"),
                key=lambda r: (r["seed"], r["run_id"]), default=None)
        if r is not None:
            errs = sorted(r["test_errors"])
            yield Misclassified(label, a, r["run_id"], r["seed"], len(errs),
                                tuple((i, int(test_labels[i]), p) for i, p in errs[:MISCLASSIFIED_SHOWN]))


@dataclass(frozen=True)
class Check:
    """One row of gradcheck.run_checks: a closed-form gradient against torch.autograd in float64."""

    name: str
    max_abs_err: float
    tol: float
    ok: bool  # max_abs_err <= tol


@dataclass(frozen=True)
class BiasStudy:
    """bias.bias_study's rows (one per estimator and K) for one set of logits."""

    title: str  # MNIST logits / synthetic logits
    classes: int
    sampler: str
    rows: tuple[dict, ...]


@dataclass(frozen=True)
class Problem1:
    gradcheck: tuple[Check, ...]
    bias: tuple[BiasStudy, ...]  # MNIST logits (Q1's trained classifier), then synthetic ones
    q1_run: str  # the run whose logits the MNIST bias study used
    wall_time_s: float


@dataclass(frozen=True)
class WidthRow:
    """Q3: the width k(L) that keeps L hidden layers nearest the budget."""

    layers: int
    root: float
    width: int
    params: int
    deviation: int
    deviation_pct: float


# ---- Q4 beyond the protocol: why seeds differ (diagnostic runs, swap grid), the per-L lr extension ---------

ESCAPE_LOSS = 2.0  # nats: a run has left the plateau at its first window below this (chance level: ln 10 = 2.30)
FAIL_GAP = 0.05  # a seed "fails" at its depth when its test accuracy is more than this below the best seed's


@dataclass(frozen=True)
class LossCurve:
    """One diagnostic run (init seed = data seed = seed): its points every DIAG_EVERY steps."""

    run_id: str
    layers: int
    width: int
    seed: int
    status: str
    test_acc: float  # NaN: diverged
    points: tuple[DiagPoint, ...]

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(p.step for p in self.points)

    @property
    def losses(self) -> tuple[float, ...]:
        return tuple(p.loss for p in self.points)


def loss_curves(results: list[dict]) -> tuple[LossCurve, ...]:
    """The diagnostic runs' curves, by depth and seed (result dicts without points are not diagnostic runs)."""
    out = [LossCurve(r["run_id"], r["layers"], r["width"], r["seed"], r["status"], r.get("test_acc", math.nan),
                     tuple(DiagPoint(**{**p, "dead": tuple(p["dead"]), "grad_norm": tuple(p["grad_norm"])})
                           for p in r["diagnostics"]))
           for r in results if "diagnostics" in r]
    return tuple(sorted(out, key=lambda c: (c.layers, c.seed)))


@dataclass(frozen=True)
class SeedDiag:
    """A diagnostic run in a few numbers: did it fail, when did it leave the plateau, dead units, gradients."""

    layers: int
    seed: int
    run_id: str
    test_acc: float
    failing: bool  # test accuracy more than FAIL_GAP below the best seed at this depth
    escape_step: int | None  # first point with window loss < ESCAPE_LOSS; None: never
    dead_first: tuple[float, ...]  # per hidden layer, at the first point
    dead_last: tuple[float, ...]  # per hidden layer, at the last point
    grad_first: tuple[float, ...]  # per layer (head last), ||dL/dW||_F at the first point
    grad_last: tuple[float, ...]


def seed_diags(curves: tuple[LossCurve, ...]) -> tuple[SeedDiag, ...]:
    out = []
    for c in curves:
        if not c.points:
            continue
        best = max((d.test_acc for d in curves if d.layers == c.layers and not math.isnan(d.test_acc)),
                   default=math.nan)
        first, last = c.points[0], c.points[-1]
        escape = next((p.step for p in c.points if p.loss < ESCAPE_LOSS), None)
        out.append(SeedDiag(c.layers, c.seed, c.run_id, c.test_acc, not c.test_acc >= best - FAIL_GAP, escape,
                            first.dead, last.dead, first.grad_norm, last.grad_norm))
    return tuple(out)


@dataclass(frozen=True)
class SwapGrid:
    """Test accuracy of init seed a x data-order seed b at one depth, split two ways (no replication).

    With grand mean m, row means r_a (over data seeds) and column means c_b (over init seeds):
    SS_init = n_b sum (r_a - m)^2, SS_data = n_a sum (c_b - m)^2, SS_resid = the rest of SS_total. The *_var are
    the sample variances (ddof 1) of the row means and of the column means, and SS_resid / ((n_a-1)(n_b-1)).
    NaN throughout when a run of the grid diverged."""

    layers: int
    seeds: tuple[int, ...]  # init seeds = data seeds
    acc: tuple[tuple[float, ...], ...]  # [a][b], fraction; NaN: diverged
    init_var: float
    data_var: float
    resid_var: float
    init_share: float  # SS_init / SS_total
    data_share: float
    resid_share: float


def swap_grid(results: list[dict], layers: int, seeds: list[int]) -> SwapGrid | None:
    """The grid from its runs' result dicts (init_seed, data_seed in their configs); None under 2 x 2."""
    if len(seeds) < 2:
        return None
    by = {(r["config"]["init_seed"], r["config"]["data_seed"]): r for r in results}
    x = np.array([[by[a, b].get("test_acc", math.nan) for b in seeds] for a in seeds], dtype=float)
    m, rows, cols = x.mean(), x.mean(1), x.mean(0)
    ss_init, ss_data = len(seeds) * ((rows - m) ** 2).sum(), len(seeds) * ((cols - m) ** 2).sum()
    ss_total = ((x - m) ** 2).sum()
    ss_resid = ss_total - ss_init - ss_data
    share = (lambda ss: float(ss / ss_total)) if ss_total > 0 else (lambda ss: math.nan)
    return SwapGrid(layers, tuple(seeds), tuple(tuple(map(float, r)) for r in x), float(rows.var(ddof=1)),
                    float(cols.var(ddof=1)), float(ss_resid / (len(seeds) - 1) ** 2), share(ss_init), share(ss_data),
                    share(ss_resid))


@dataclass(frozen=True)
class Tuned:
    """The extension at one depth: each lr's mean validation accuracy over the tune seeds, the lr chosen on it
    (only lrs where every tune seed finished compete), and the chosen lr's test accuracy over those seeds."""

    layers: int
    lrs: tuple[float, ...]
    val_acc: tuple[float, ...]  # per lr, mean over the tune seeds; NaN where a run diverged
    diverged: tuple[int, ...]  # per lr
    chosen_lr: float | None  # None: every lr had a diverged run
    test: Arch | None  # the chosen lr's runs
    protocol: Arch | None  # the protocol lr's runs over the same seeds, for comparison (None: not in the grid)


def tuned(results: list[dict], layers: list[int], lrs: list[float], protocol_lr: float) -> tuple[Tuned, ...]:
    out = []
    for L in layers:
        per = [[r for r in results if r["layers"] == L and r["config"]["lr"] == lr] for lr in lrs]
        val = [math.nan if any(r["status"] != "ok" for r in rs) else mean_ci([r["val_acc"] for r in rs])[0]
               for rs in per]
        ok = [i for i, v in enumerate(val) if not math.isnan(v)]
        pick = max(ok, key=lambda i: (val[i], -lrs[i])) if ok else None  # a tie goes to the smaller lr
        out.append(Tuned(L, tuple(lrs), tuple(val), tuple(sum(r["status"] != "ok" for r in rs) for rs in per),
                         None if pick is None else lrs[pick], None if pick is None else summarize(per[pick])[0],
                         summarize(per[lrs.index(protocol_lr)])[0] if protocol_lr in lrs else None))
    return tuple(out)


@dataclass(frozen=True)
class AbsRoot:
    """Q3 as the source did it: |negative root| of P(L, k) = budget as a width, and the count it gives."""

    layers: int
    negative_root: float
    width: int
    params: int


@dataclass(frozen=True)
class SourceChecks:
    """The source's answers, measured: the report's "the source wrote ..." notes quote these."""

    gradient: GradientError  # its Problem 1 Q1 gradient against autograd
    abs_roots: tuple[AbsRoot, ...]  # per L >= 2 of Q4
    fixed_params: tuple[tuple[int, int], ...]  # (L, parameters at width 1024): the bonus's models


@dataclass(frozen=True)
class Summary:
    protocol: TrainConfig  # what every run shares (seed, model, layers, width aside)
    config: dict  # the resolved ReproduceConfig
    seeds: int
    quick: bool
    budget: int
    provenance: dict  # versions, git_commit, machine, command
    problem1: Problem1
    q1: Arch
    q2: Arch
    q3: tuple[WidthRow, ...]
    q4: tuple[Arch, ...]  # equal parameters
    q4_fixed: tuple[Arch, ...] | None  # width 1024 for every L (--with-fixed-width)
    runs: tuple[Run, ...]
    misclassified: tuple[Misclassified, ...]
    wall_time_s: float  # compute time as recorded by each part: a resumed study reports what a straight one does
    q2_vs_q1: PairedTest | None = None  # Q2 minus Q1, paired by seed
    q4_tests: tuple[PairedTest, ...] = ()  # each L against L = 1 and against L - 1, Holm-adjusted together
    source: SourceChecks | None = None
    loss_curves: tuple[LossCurve, ...] = ()  # the diagnostic runs (--diagnose), by depth and seed
    seed_diags: tuple[SeedDiag, ...] = ()
    swap: SwapGrid | None = None  # init seed x data seed at the deepest diagnostic depth
    tuned: tuple[Tuned, ...] = ()  # the per-L lr extension (--tune-lrs), by depth
    extension_runs: tuple[Run, ...] = ()  # the diagnostic and extension runs that are not protocol runs

    def archs(self) -> list[Arch]:
        """Every architecture once, in study order (Q1, Q2, Q4, Q4 fixed)."""
        out: dict[str, Arch] = {}
        for a in (self.q1, self.q2, *self.q4, *(self.q4_fixed or ())):
            out.setdefault(a.name, a)
        return list(out.values())

    def runs_of(self, name: str) -> list[Run]:
        return sorted((r for r in self.runs if r.name == name), key=lambda r: (r.seed, r.run_id))


def from_json(tp, v):
    """A value of type `tp` (a dataclass, tuple[X, ...], X | None, a primitive) from its JSON form."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if v is None:
        return None
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        if not isinstance(v, dict) or set(v) - names:
            raise ValueError(f"{tp.__name__}: unexpected fields {sorted(set(v) - names) if isinstance(v, dict) else v}")
        return tp(**{k: from_json(hints[k], x) for k, x in v.items()})
    if origin in (typing.Union, types.UnionType):
        return from_json(next(a for a in args if a is not type(None)), v)
    if origin is tuple:
        return tuple(from_json(args[0], x) for x in v) if args[-1:] == (...,) else \
            tuple(from_json(a, x) for a, x in zip(args, v, strict=True))
    return v


def load_summary(path) -> Summary:
    """summary.json back as the Summary that wrote it; ValueError if it is not one (another version's)."""
    with open(path, encoding="utf-8") as f:
        return from_json(Summary, json.load(f))
