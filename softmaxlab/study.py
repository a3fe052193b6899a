"""Plans and executes sets of training runs (a sweep, or the assignment's study) with resumable records."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import runs
from .errors import SoftmaxlabError
from .stats import mean_ci
from .train import Data, TrainConfig, train


def parse_range(text: str | int, what: str, lo: int = 0) -> list[int]:
    """'1-8' -> [1..8], '0,2,5' -> [0,2,5], '3' -> [3]."""
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                a, b = int(a), int(b)
                if b < a:
                    raise ValueError
                out += range(a, b + 1)
            else:
                out.append(int(part))
    except ValueError:
        raise SoftmaxlabError(f"cannot read {what} {text!r}: write a list like 1-8 or 0,2,5") from None
    if not out or min(out) < lo:
        raise SoftmaxlabError(f"{what} {text!r} must be integers >= {lo}: write a list like 1-8")
    return sorted(dict.fromkeys(out))


def run_name(cfg: TrainConfig, width: int | None = None) -> str:
    if cfg.model == "linear":
        return "linear"
    k = width if width is not None else cfg.width
    return f"mlp-L{cfg.layers}-k{k}"


def load_data(data_dir=None, normalize_unused: bool = False) -> Data:
    from .data import load_mnist, mnist_split

    return Data.from_mnist(mnist_split(load_mnist(data_dir)))


def check_study(out: Path, kind: str, protocol: dict) -> None:
    """An --out folder belongs to one study: refuse to mix another study's runs into it."""
    path = out / "study.json"
    want = dict(kind=kind, protocol=protocol)
    have = runs.read_json(path)
    if have is None and path.exists():
        have = runs.read_json(path)  # another process may have created it between our two looks
        if have is None:
            raise SoftmaxlabError(f"{path} is unreadable: pass a fresh --out (or delete that folder)")
    if have is None:
        if not runs.write_json(path, want, exclusive=True):  # another process created it since we looked
            return check_study(out, kind, protocol)
    elif have != want:
        diff = sorted(k for k in set(have.get("protocol", {})) | set(protocol)
                      if have.get("protocol", {}).get(k) != protocol.get(k))
        what = f"differs in {', '.join(diff)}" if diff else f"is a {have.get('kind')!r} study"
        raise SoftmaxlabError(f"--out {out} holds a different study's runs ({what}): pass a fresh --out "
                              f"or delete that folder")


def execute(cfgs: list[TrainConfig], out: str | Path, data: Data, progress: bool | None = None,
            log=print, tracker=None, batch_seeds: bool = False, workers: int | None = 1,
            _helper: bool = False) -> list[dict]:
    """Run every config not yet done under `out`; return all their results (in plan order).

    Another process working on the same --out holds a run's lock: we skip it, do the rest, then wait for it.
    batch_seeds: first train the runs that differ only in seed together (batched.py), then the rest one by one.
    Off by default: batched GEMMs sum in another order than single ones, so a run's metrics would depend on
    which runs it happened to be grouped with (equal to ~1e-3, not bitwise); the default keeps every run's
    numbers independent of scheduling, resumes and executors.
    workers: processes that train at once (workers.py), each with its share of the cores as threads; None:
    one per core on the CPU.
    """
    from . import workers as pool

    out = runs.ensure_dir(out)
    (out / "runs").mkdir(exist_ok=True)
    if not _helper:
        runs.remove_stale_temps(out)  # left by a killed sweep; run folders are cleaned under their lock
    if progress is None:
        progress = sys.stderr.isatty()
    ids = [runs.run_id(c.identity()) for c in cfgs]
    n_workers = pool.resolve(workers, cfgs, tracker)
    order = list(zip(cfgs, ids))
    helpers = []
    if n_workers > 1:
        cfgs = pool.per_worker(cfgs, n_workers)
        order = [(c, runs.run_id(c.identity())) for c in pool.longest_first(cfgs)]
        todo = [c for c, rid in order if not (out / "runs" / rid / "result.json").exists()]
        if len(todo) > 1:
            helpers = pool.start(min(n_workers, len(todo)) - 1, [c for c, _ in order], out, data, batch_seeds,
                                 echo=log is print)
    try:
        results = _execute(order, out, data, progress, log, tracker, batch_seeds, helpers, _helper)
    finally:
        pool.stop(helpers)
    if _helper:  # a helper returns the runs it finished; the others are its parent's to collect
        return [results[rid] for rid in ids if rid in results]
    return [results[rid] for rid in ids]


def _execute(order, out, data, progress, log, tracker, batch_seeds, helpers, helper_only) -> dict[str, dict]:
    results: dict[str, dict] = {}
    cfgs = [c for c, _ in order]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cfgs), desc="runs", unit="run", dynamic_ncols=True)
        log = bar.write
    if batch_seeds:
        from .batched import run_groups

        results.update(run_groups(cfgs, out, data, progress=progress, log=log, tracker=tracker))
        if bar is not None:
            bar.update(len(results))
    for wait in (False, True):
        if wait and helper_only:  # a helper leaves the runs others hold to them and goes
            break
        if wait:
            from .workers import join

            join(helpers)  # their runs are done (or, if one failed, unlocked for us to train)
        for cfg, rid in order:
            if rid in results:
                continue
            res = run_one(cfg, out, data, wait=wait, progress=progress, log=log, tracker=tracker)
            if res is not None:
                results[rid] = res
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return results


def run_one(cfg: TrainConfig, out: Path, data: Data, wait: bool = False, progress: bool = False,
            log=print, tracker=None) -> dict | None:
    """Train one run unless its result exists; None if another process holds it (and wait is False)."""
    rid = runs.run_id(cfg.identity())
    d = out / "runs" / rid
    done = runs.read_json(d / "result.json")
    if done is not None:
        return done
    d.mkdir(parents=True, exist_ok=True)
    with runs.try_lock(d / "lock", wait=wait) as got:
        if not got:
            return None
        done = runs.read_json(d / "result.json")  # finished by the other process while we waited
        if done is not None:
            return done
        runs.remove_stale_temps(d)  # we hold the lock: any temp file here is a killed holder's
        return _train_and_record(cfg, rid, d, data, progress, log, tracker)


def _train_and_record(cfg, rid, d: Path, data, progress, log, tracker) -> dict:
    begin_record(cfg, rid, d, tracker)
    t0 = time.perf_counter()

    def on_epoch(rec):
        history.append(rec)
        write_metrics(d, history)
        if tracker is not None:
            tracker.log_epoch(rid, rec)

    ck = d / "checkpoint.pt"
    history: list[dict] = []
    if ck.exists():
        history[:] = train_history(ck)
        # a kill between the checkpoint and metrics.jsonl left it an epoch short: the checkpoint is the truth
        write_metrics(d, history)
    res = train(cfg, data, checkpoint=ck, on_epoch=on_epoch, progress=progress)
    return finish_record(cfg, rid, d, res, time.perf_counter() - t0, log, tracker)


# The record-writing steps, shared with executors.py (where workers train and this process writes).


def begin_record(cfg: TrainConfig, rid: str, d: Path, tracker=None) -> None:
    """Write config.json and tell the tracker a run starts; the caller holds the run's lock."""
    runs.write_json(d / "config.json", dict(run_id=rid, config=dataclasses.asdict(cfg),
                                            identity=cfg.identity()))
    if tracker is not None:
        tracker.start_run(rid, run_name(cfg, cfg.identity()["width"]), cfg.identity())


def write_metrics(d: Path, history: list[dict]) -> None:
    runs.atomic_write(d / "metrics.jsonl", "".join(runs.json.dumps(h) + "\n" for h in history))


def finish_record(cfg: TrainConfig, rid: str, d: Path, res: dict, wall_time_s: float, log=print, tracker=None,
                  provenance: dict | None = None) -> dict:
    """Write result.json (last: it marks the run done) from train()'s output, tell the tracker, log a line."""
    name = run_name(cfg, res["width"])
    result = dict(run_id=rid, name=name, model=cfg.model, layers=cfg.layers if cfg.model == "mlp" else 0,
                  seed=cfg.seed, precision=cfg.precision, config=dataclasses.asdict(cfg),
                  wall_time_s=wall_time_s, **res, **(provenance or runs.provenance()))
    runs.write_json(d / "result.json", result)
    if tracker is not None:
        tracker.end_run(rid, result)
    if result["status"] == "ok":
        log(f"done {name} seed={cfg.seed}: test_acc={result['test_acc']:.4f} val_acc={result['val_acc']:.4f} "
            f"params={result['params']:,} ({result['train_time_s']:.1f}s train)")
    else:
        at = result["diverged_at"]
        log(f"DIVERGED {name} seed={cfg.seed} at epoch {at['epoch']} step {at['step']}: recorded, going on")
    return result


def train_history(ck: Path) -> list[dict]:
    from .train import load_checkpoint

    return list(load_checkpoint(ck).history)


def summarize(results: list[dict]) -> list[dict]:
    """One row per architecture: test accuracy mean and 95% CI over seeds (diverged runs counted apart)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    rows = []
    for name, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        acc = mean_ci([r["test_acc"] for r in ok])
        rows.append(dict(name=name, model=rs[0]["model"], layers=rs[0]["layers"], width=rs[0]["width"],
                         params=rs[0]["params"], seeds=sorted(r["seed"] for r in rs),
                         diverged=len(rs) - len(ok), test_acc_mean=acc["mean"], test_acc_ci=acc["ci"],
                         test_acc_std=acc["std"], n=acc["n"]))
    return sorted(rows, key=lambda r: (r["model"] != "linear", r["layers"], r["width"]))


@dataclass(frozen=True)
class SweepConfig:
    layers: str = "1-8"
    """Hidden-layer counts to train, e.g. 1-8 or 1,2,4."""
    seeds: str = "0-2"
    """Seeds, e.g. 0-2 or 0,5."""
    width: str = "equal"
    """equal (the width that keeps each L at the budget) or an integer width for every L."""
    model: str = "mlp"
    """mlp, or linear (then layers and width are ignored)."""
    out: str = "runs"
    """Folder for run records; re-running resumes."""
    executor: str = "local"
    """local (one run after another in this process) or ray (each run a Ray task; see docs/integrations.md)."""
    address: Optional[str] = None
    """Ray cluster for --executor ray: unset = $RAY_ADDRESS, else a cluster `ray start` began on this machine,
    else a new local instance; local = a new local instance; auto = an existing cluster or an error;
    host:6379; ray://host:10001 (Ray Client)."""
    track: str = "none"
    """none, mlflow ($MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here) or tensorboard (<out>/tb)."""
    batch_seeds: bool = False
    """Train the seeds of one architecture together (faster; metrics then match one-by-one runs to ~1e-3,
    not bitwise). Local executor only."""
    workers: Optional[int] = None
    """Local executor: runs trained at once, each in its own process with its share of the cores as torch threads; None: one
    per CPU core (1 on CUDA or with --track). A run's metrics depend on its thread count, not on the process."""

    def plan(self, base: TrainConfig) -> list[TrainConfig]:
        if self.model not in ("mlp", "linear"):
            raise SoftmaxlabError(f"--model {self.model!r} is unknown: use mlp or linear")
        seeds = parse_range(self.seeds, "seeds", 0)
        if self.model == "linear":
            return [dataclasses.replace(base, model="linear", seed=s) for s in seeds]
        if self.width == "equal":
            width = None
        else:
            width = parse_range(self.width, "width", 1)
            if len(width) != 1:
                raise SoftmaxlabError(f"--width {self.width!r} must be one integer or equal")
            width = width[0]
        return [dataclasses.replace(base, model="mlp", layers=L, width=width, seed=s)
                for L in parse_range(self.layers, "layers", 1) for s in seeds]


def check_workers(workers) -> None:
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise SoftmaxlabError(f"--workers {workers!r} is invalid: pass a positive integer, or leave it unset "
                              f"for one per CPU core")


def protocol(base: TrainConfig) -> dict:
    """The fields all runs of one study share; a different protocol is a different study."""
    ident = base.identity()
    return {k: ident[k] for k in ("budget", "init", "lr", "batch_size", "epochs", "normalize",
                                  "train_subset", "eval_subset", "precision")}


# ---- the assignment's study: `softmaxlab reproduce` -----------------------------------------------------


@dataclass(frozen=True)
class ReproduceConfig:
    seeds: int = 3
    """Seeds per architecture (0 .. seeds-1); the CIs are over these."""
    out: str = "results"
    """Folder for runs, figures and the report; re-running resumes."""
    quick: bool = False
    """Smoke test: 1 seed, 1 epoch, 5,000 training and 2,000 evaluation images, a small bias study."""
    with_fixed_width: bool = False
    """Also train the assignment's own Q4 code: width 1024 for every L (not equal-parameter)."""
    layers: str = "1-8"
    """Hidden-layer counts of Q4."""
    epochs: int = 5
    """Passes over the training set (the assignment: 5)."""
    lr: float = 0.01
    """SGD learning rate (the assignment: 0.01)."""
    batch_size: int = 64
    """SGD batch (the assignment: 64)."""
    init: str = "glorot"
    """glorot (Keras's default, as the assignment) or torch."""
    precision: str = "fp32"
    """fp32 or bf16."""
    bias_classes: int = 100_000
    """Classes of the synthetic sampled-softmax bias study."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: Optional[int] = None
    """torch intra-op threads; None: torch's default."""
    track: str = "none"
    """none, mlflow ($MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here) or tensorboard (<out>/tb); the report
    goes to MLflow as an artifact."""
    batch_seeds: bool = False
    """Train the seeds of one architecture together (faster; metrics then match one-by-one runs to ~1e-3,
    not bitwise)."""
    workers: Optional[int] = None
    """Runs trained at once, each in its own process with its share of the cores as torch threads; None: one
    per CPU core (1 on CUDA or with --track). A run's metrics depend on its thread count, not on the process."""

    def resolved(self) -> ReproduceConfig:
        for name, lo in (("seeds", 1), ("epochs", 1), ("bias_classes", 2)):  # checked before --quick replaces them
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise SoftmaxlabError(f"--{name.replace('_', '-')} {v!r} is invalid: pass "
                                      f"{'a positive integer' if lo == 1 else f'an integer >= {lo}'}")
        if self.quick:
            return dataclasses.replace(self, seeds=1, epochs=1, bias_classes=min(self.bias_classes, 10_000))
        return self

    def base(self) -> TrainConfig:
        sub = dict(train_subset=5000, eval_subset=2000) if self.quick else {}
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, init=self.init,
                           precision=self.precision, device=self.device, threads=self.threads, **sub)

    def plan(self) -> dict[str, list[TrainConfig]]:
        """Runs per question; an architecture shared by two questions (Q2 = Q4 at L=1) is one run."""
        from .models import width_for_budget

        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise SoftmaxlabError(f"--seeds {self.seeds!r} is invalid: pass a positive integer")
        check_workers(self.workers)
        base, seeds = self.base().validate(), range(self.seeds)
        layers = parse_range(self.layers, "layers", 1)
        mlp = lambda L, k, s: dataclasses.replace(base, model="mlp", layers=L, width=k, seed=s)
        plan = dict(
            q1=[dataclasses.replace(base, model="linear", seed=s) for s in seeds],
            q2=[mlp(1, 1024, s) for s in seeds],
            q4=[mlp(L, width_for_budget(L, base.budget), s) for L in layers for s in seeds],
        )
        if self.with_fixed_width:
            plan["q4_fixed"] = [mlp(L, 1024, s) for L in layers for s in seeds]
        return plan


def reproduce(cfg: ReproduceConfig, data_dir=None, log=print, progress: bool = False) -> dict:
    """Answer every question of the assignment under `cfg.out`: runs, Problem 1 studies, summary, report.
    progress: draw the overall progress line (progress.py) on stderr while the runs train."""
    from .models import width_table

    t0 = time.perf_counter()
    cfg = cfg.resolved()
    plan = cfg.plan()
    out = runs.ensure_dir(cfg.out)
    check_study(out, "reproduce", protocol(cfg.base()))
    runs.write_json(out / "config.json", dataclasses.asdict(cfg))
    from .tracking import make_tracker

    tracker = make_tracker(cfg.track, out)
    data = load_data(data_dir)
    unique = list({runs.run_id(c.identity()): c for cs in plan.values() for c in cs}.values())
    log(f"reproduce: {len(unique)} runs ({cfg.seeds} seed(s), {cfg.epochs} epoch(s) each) -> {out}")
    from .train import precision_note

    note = precision_note(cfg.base())
    if note:
        log(note)
    from .progress import study_progress

    with study_progress(out, [runs.run_id(c.identity()) for c in unique], show=progress):
        done = execute(unique, out, data, progress=False, log=log, tracker=tracker, batch_seeds=cfg.batch_seeds,
                       workers=cfg.workers)
    results = {runs.run_id(c.identity()): r for c, r in zip(unique, done)}
    runs.atomic_write(out / "results.csv", runs.results_csv(list(results.values())))

    by_q = {q: [results[runs.run_id(c.identity())] for c in cs] for q, cs in plan.items()}
    problem1 = problem1_study(cfg, out, data, by_q["q1"], log)
    summary = dict(
        config=dataclasses.asdict(cfg), provenance=runs.provenance(),
        problem1=problem1,
        q1=summarize(by_q["q1"])[0], q2=summarize(by_q["q2"])[0], q3=width_table(parse_range(cfg.layers, "layers", 1)),
        q4=dict(equal=summarize(by_q["q4"]),
                fixed=summarize(by_q["q4_fixed"]) if "q4_fixed" in by_q else None),
        runs=[{k: v for k, v in r.items() if k != "test_errors"} for r in results.values()],
        # Compute time as recorded by each part, so a resumed study reports the same figure as a straight one.
        wall_time_s=sum(r["wall_time_s"] for r in results.values()) + problem1["wall_time_s"],
    )
    runs.write_json(out / "summary.json", summary)
    from .report import write_report

    written = write_report(out, summary, test_images=data.test.x, test_labels=data.test.y)
    if tracker is not None:
        for path in [out / "summary.json", out / "results.csv", *written.values()]:
            tracker.log_artifact(path, subdir=path.parent.relative_to(out).as_posix())
        tracker.close()
    log(f"report: {out / 'report.html'} (compute {summary['wall_time_s']:.0f}s; this invocation "
        f"{time.perf_counter() - t0:.0f}s)")
    return summary


def mnist_logits(data: Data | None = None, state: dict | None = None, n: int = 2000, data_dir=None):
    """Logits (n, 10) and labels of a linear softmax classifier on the first n test images.

    state: the trained weights (Q1's run); None trains one for an epoch under the assignment's protocol.
    """
    import torch

    from .data import to_float
    from .train import init_model

    data = data if data is not None else load_data(data_dir)
    if state is None:
        state = train(TrainConfig(model="linear", epochs=1), data, keep_model=True)["model"].state_dict()
    model, _ = init_model(TrainConfig(model="linear"))
    model.load_state_dict(state)
    with torch.no_grad():
        z = model(to_float(data.test.x[:n])).double()
    return z, data.test.y[:n]


def problem1_study(cfg: ReproduceConfig, out: Path, data: Data, q1_runs: list[dict], log=print) -> dict:
    """Gradient checks and the bias study (Q1's trained logits, C = 10; synthetic, C = bias_classes)."""
    from .bias import bias_study, plot_bias  # noqa: F401  (plot made by the report)
    from .gradcheck import run_checks
    from .train import load_checkpoint

    path = out / "problem1.json"
    key = dict(bias_classes=cfg.bias_classes, quick=cfg.quick, q1_run=q1_runs[0]["run_id"])
    have = runs.read_json(path)
    if have is not None and have.get("key") == key:
        return have
    t0 = time.perf_counter()
    checks = run_checks()
    log(f"problem 1: {sum(r['ok'] for r in checks)}/{len(checks)} gradient checks pass "
        f"(max err {max(r['max_abs_err'] for r in checks):.1e})")
    state = load_checkpoint(out / "runs" / q1_runs[0]["run_id"] / "checkpoint.pt").model
    z, y = mnist_logits(data, state)
    ks = (2, 4, 8) if cfg.quick else (1, 2, 4, 8)  # C = 10: K < C
    mnist_rows = bias_study(classes=10, samples=ks, sampler="uniform", logits=(z, y), seed=0)
    syn_ks = (8, 64, 512) if cfg.quick else (8, 64, 512, 4096)
    syn_rows = bias_study(classes=cfg.bias_classes, samples=syn_ks, sampler="loguniform", seed=0)
    log("problem 1: bias study done")
    res = dict(key=key, gradcheck=checks, wall_time_s=time.perf_counter() - t0,
               bias=dict(mnist=dict(classes=10, sampler="uniform", rows=mnist_rows),
                         synthetic=dict(classes=cfg.bias_classes, sampler="loguniform", rows=syn_rows)))
    runs.write_json(path, res)
    return res
