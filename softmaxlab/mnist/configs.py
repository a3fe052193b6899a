"""One typed, frozen config per job: a run (TrainConfig), a sweep (SweepConfig), the study (ReproduceConfig).

Each field's help is its dataclass field metadata (`opt`); cli.py generates every option from these fields,
and the resolved config is saved beside every result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import SoftmaxlabError
from .models import BUDGET, width_for_budget


def opt(default, help: str):
    """A config field with its help text (what --help shows)."""
    return dataclasses.field(default=default, metadata={"help": " ".join(help.split())})


def parse_range(text: str | int, what: str, lo: int = 0) -> list[int]:
    """'1-8' -> [1..8], '0,2,5' -> [0,2,5], '3' -> [3]."""
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = map(int, part.split("-", 1))  # a leading minus leaves a = "", not an integer
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


def check_workers(workers) -> None:
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise SoftmaxlabError(f"--workers {workers!r} is invalid: pass a positive integer, or leave it unset "
                              f"for one per CPU core")


WORKERS_HELP = """Runs trained at once, each in its own process with its share of the cores as torch threads; None:
    one per CPU core (1 on CUDA or with --track). A run's metrics depend on its thread count, not on the process."""
EXECUTORS = ("local", "ray")  # sweep --executor; ray is extras/ray.py
TRACK_HELP = "none, mlflow ($MLFLOW_TRACKING_URI, else sqlite:///mlruns.db here) or tensorboard (<out>/tb)."


@dataclass(frozen=True)
class TrainConfig:
    model: str = opt("mlp", "linear (Q1 softmax classifier) or mlp (ReLU hidden layers).")
    layers: int = opt(1, "Hidden layers L of the MLP (ignored for linear).")
    width: Optional[int] = opt(None, "Hidden width k; None picks the width that keeps L layers at `budget` "
                               "parameters (Q3).")
    budget: int = opt(BUDGET, "Parameter budget for an unset width (814,090: the 784-1024-10 MLP).")
    init: str = opt("glorot", "glorot (Keras's default, as the assignment's Keras runs: Glorot-uniform weights, "
                    "zero biases) or torch (PyTorch's default: uniform +/- 1/sqrt(fan_in)).")
    lr: float = opt(0.01, "SGD learning rate.")
    batch_size: int = opt(64, "Examples per SGD step.")
    epochs: int = opt(5, "Passes over the 50,000 training images.")
    seed: int = opt(0, "Seeds the initialisation and the per-epoch shuffle.")
    init_seed: Optional[int] = opt(None, "Seeds the initialisation only; None: `seed` (the assignment's protocol).")
    data_seed: Optional[int] = opt(None, "Seeds the per-epoch shuffle only; None: `seed` (the assignment's "
                                   "protocol).")
    normalize: bool = opt(False, "Standardise pixels (mean 0.1307, std 0.3081) instead of the assignment's "
                          "plain /255.")
    train_subset: Optional[int] = opt(None, "Train on the first N examples of the training split only (smoke "
                                      "tests); None: all 50,000.")
    eval_subset: Optional[int] = opt(None, "Evaluate on the first N validation and test examples only (smoke "
                                     "tests); None: all.")
    precision: str = opt("fp32", """fp32, or bf16: the hidden layers' matmuls (forward, backward) in bfloat16 with
        fp32 master weights, updates and loss; the 10-way output layer stays fp32 (on a CPU a 10-wide bf16 matmul
        is slower, not faster). Evaluation is fp32. On a CPU without bf16 matmul units (AVX512-BF16, AMX) the
        bf16 GEMMs are emulated with fp32 ones on bf16-rounded values: the same numbers, no speed-up (result:
        bf16_gemm).""")
    device: str = opt("auto", "auto (cuda if available), cpu or cuda. Not part of the run's identity.")
    threads: Optional[int] = opt(None, "torch intra-op threads; None leaves torch's default. Not part of the "
                                 "run's identity.")
    cuda_graph: bool = opt(True, "On CUDA, replay each full-batch SGD step as one CUDA graph (no per-step "
                           "launches or syncs). Not part of the run's identity.")
    diagnostics: bool = opt(False, """Record, every 50 steps (diagnostics.DIAG_EVERY), the mean training loss, the
        dead-ReLU fraction per hidden layer and the weight-gradient norm per layer (mnist/diagnostics.py). The
        metrics are bitwise those of the run without it (on CUDA it trains without the CUDA graph); its own
        record.""")

    def validate(self) -> TrainConfig:
        def bad(name, fix):
            raise SoftmaxlabError(f"{name}={getattr(self, name)!r} is invalid: {fix}")

        def positive(v, none_ok=False):
            return (v is None and none_ok) or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)

        if self.model not in ("linear", "mlp"):
            bad("model", "use linear or mlp")
        for name in ("layers", "epochs", "batch_size", "budget"):
            if not positive(getattr(self, name)):
                bad(name, "pass a positive integer")
        if not positive(self.width, none_ok=True):
            bad("width", "pass a positive integer, or auto for the equal-parameter width")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            bad("lr", "pass a finite learning rate > 0")
        for name in ("seed", "init_seed", "data_seed"):
            v = getattr(self, name)
            if not (v is None and name != "seed") and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                bad(name, "pass an integer >= 0" + ("" if name == "seed" else ", or leave it unset for --seed"))
        for name in ("train_subset", "eval_subset"):
            if not positive(getattr(self, name), none_ok=True):
                bad(name, "pass a positive integer or leave it unset")
        for name, choices in (("init", ("torch", "glorot")), ("precision", ("fp32", "bf16")),
                              ("device", ("auto", "cpu", "cuda"))):
            if getattr(self, name) not in choices:
                bad(name, f"use {', '.join(choices[:-1])} or {choices[-1]}")
        if self.device == "cuda" and not torch.cuda.is_available():
            bad("device", "no CUDA device is visible here; use --device cpu or auto")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "pass a positive integer")
        if self.model == "mlp" and self.width is None:
            width_for_budget(self.layers, self.budget)  # a budget too small for L layers: say so before any work
        return self

    def seeds(self) -> tuple[int, int]:
        """(init seed, data seed): init_seed and data_seed where set, else seed."""
        return (self.seed if self.init_seed is None else self.init_seed,
                self.seed if self.data_seed is None else self.data_seed)

    def identity(self) -> dict:
        """The fields that decide the result (device, threads and cuda_graph only decide the speed).

        A field added after the first studies is left out at its default (init_seed/data_seed None,
        diagnostics False), so every run recorded before it keeps its run id."""
        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in ("device", "threads", "cuda_graph") and not (k in NEW_FIELDS and v is NEW_FIELDS[k])}
        if self.model == "linear":
            d["layers"], d["width"] = 0, 0
        elif self.width is None:  # width=None and the width it resolves to are the same run
            d["width"] = width_for_budget(self.layers, self.budget)
        return d


NEW_FIELDS = dict(init_seed=None, data_seed=None, diagnostics=False)  # out of the identity at these defaults


def protocol(base: TrainConfig) -> dict:
    """The fields all runs of one study share; a different protocol is a different study."""
    ident = base.identity()
    return {k: ident[k] for k in ("budget", "init", "lr", "batch_size", "epochs", "normalize",
                                  "train_subset", "eval_subset", "precision")}


@dataclass(frozen=True)
class SweepConfig:
    layers: str = opt("1-8", "Hidden-layer counts to train, e.g. 1-8 or 1,2,4.")
    seeds: str = opt("0-2", "Seeds, e.g. 0-2 or 0,5.")
    width: str = opt("equal", "equal (the width that keeps each L at the budget) or an integer width for every L.")
    model: str = opt("mlp", "mlp, or linear (then layers and width are ignored).")
    out: str = opt("runs", "Folder for run records; re-running resumes.")
    executor: str = opt("local", "local (runs in this process and its workers) or ray (each run a Ray task; see "
                        "docs/integrations.md).")
    address: Optional[str] = opt(None, """Ray cluster for --executor ray: unset = $RAY_ADDRESS, else a cluster
        `ray start` began on this machine, else a new local instance; local = a new local instance; auto = an
        existing cluster or an error; host:6379; ray://host:10001 (Ray Client).""")
    track: str = opt("none", TRACK_HELP)
    workers: Optional[int] = opt(None, "Local executor: " + WORKERS_HELP)

    def plan(self, base: TrainConfig) -> list[TrainConfig]:
        """The sweep's runs; a bad option raises first."""
        if self.model not in ("mlp", "linear"):
            raise SoftmaxlabError(f"--model {self.model!r} is unknown: use mlp or linear")
        if self.executor not in EXECUTORS:
            raise SoftmaxlabError(f"--executor {self.executor!r} is unknown: use {' or '.join(EXECUTORS)}")
        check_workers(self.workers)
        if self.workers is not None and self.executor == "ray":
            raise SoftmaxlabError("--workers is for the local executor (Ray schedules its own): drop --workers")
        if self.address is not None and self.executor != "ray":
            raise SoftmaxlabError("--address is for --executor ray: add --executor ray or drop --address")
        seeds = parse_range(self.seeds, "seeds", 0)
        if self.model == "linear":
            return [dataclasses.replace(base, model="linear", seed=s) for s in seeds]
        width = None if self.width == "equal" else parse_range(self.width, "width", 1)
        if width is not None and len(width) != 1:
            raise SoftmaxlabError(f"--width {self.width!r} must be one integer or equal")
        return [dataclasses.replace(base, model="mlp", layers=L, width=width[0] if width else None, seed=s)
                for L in parse_range(self.layers, "layers", 1) for s in seeds]


DIAG_LAYERS = (1, 4, 8)  # depths of the diagnostic runs: Q4's shallowest, a middle one, its deepest
SWAP_SEEDS = 5  # the swap grid is min(SWAP_SEEDS, seeds)^2 runs (the diagonal shared with the diagnostic runs)


@dataclass(frozen=True)
class ReproduceConfig:
    seeds: int = opt(3, "Seeds per architecture (0 .. seeds-1); the CIs are over these.")
    out: str = opt("results", "Folder for runs, figures and the report; re-running resumes.")
    quick: bool = opt(False, "Smoke test: 1 seed, 1 epoch, 5,000 training and 2,000 evaluation images, a small "
                      "bias study.")
    with_fixed_width: bool = opt(False, "Also train the assignment's own Q4 code: width 1024 for every L (not "
                                 "equal-parameter).")
    layers: str = opt("1-8", "Hidden-layer counts of Q4.")
    epochs: int = opt(5, "Passes over the training set (the assignment: 5).")
    lr: float = opt(0.01, "SGD learning rate (the assignment: 0.01).")
    batch_size: int = opt(64, "SGD batch (the assignment: 64).")
    init: str = opt("glorot", "glorot (Keras's default, as the assignment) or torch.")
    precision: str = opt("fp32", "fp32 or bf16.")
    bias_classes: int = opt(100_000, "Classes of the synthetic sampled-softmax bias study.")
    device: str = opt("auto", "auto, cpu or cuda.")
    threads: Optional[int] = opt(None, "torch intra-op threads; None: torch's default.")
    track: str = opt("none", TRACK_HELP + " The report goes to MLflow as an artifact.")
    workers: Optional[int] = opt(None, WORKERS_HELP)
    diagnose: bool = opt(True, """Also train the diagnostic runs of "Q4: why seeds differ" (--diagnostics runs,
        separate records): L = 1, 4, 8 (those in --layers) for every seed, and at the deepest of them the swap grid,
        initialisation seed a x data-order seed b for a, b < min(5, seeds).""")
    tune_lrs: str = opt("none", """Extension, not the assignment's protocol: for each L of Q4, the equal-parameter
        MLP at each of these learning rates (runs at the protocol's lr are its own runs), the lr with the best mean
        validation accuracy chosen per L, its test accuracy reported. none (the default: it trains 8 x 3 x
        tune_seeds more runs): off. docs/results uses 0.01,0.03,0.1,0.3. --quick keeps the first two.""")
    tune_seeds: int = opt(5, "Seeds 0 .. tune_seeds-1 of the lr extension (capped at --seeds).")

    def resolved(self) -> ReproduceConfig:
        self.lrs()  # a bad grid: say so first
        # checked before --quick replaces them
        for name, lo in (("seeds", 1), ("epochs", 1), ("bias_classes", 2), ("tune_seeds", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise SoftmaxlabError(f"--{name.replace('_', '-')} {v!r} is invalid: pass "
                                      f"{'a positive integer' if lo == 1 else f'an integer >= {lo}'}")
        if self.quick:
            return dataclasses.replace(self, seeds=1, epochs=1, bias_classes=min(self.bias_classes, 10_000),
                                       tune_lrs=",".join(str(lr) for lr in self.lrs()[:2]) or "none")
        return self

    def lrs(self) -> list[float]:
        """The extension's learning-rate grid, in the given order, each once; [] when it is off."""
        if isinstance(self.tune_lrs, str) and self.tune_lrs.strip().lower() == "none":
            return []
        try:
            lrs = [float(v) for v in self.tune_lrs.split(",")]
        except (ValueError, AttributeError):
            lrs = []
        if not lrs or not all(math.isfinite(lr) and lr > 0 for lr in lrs):
            raise SoftmaxlabError(f"--tune-lrs {self.tune_lrs!r} is invalid: pass learning rates > 0 like "
                                  f"0.01,0.1, or none for no extension")
        return list(dict.fromkeys(lrs))

    def base(self) -> TrainConfig:
        sub = dict(train_subset=5000, eval_subset=2000) if self.quick else {}
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, init=self.init,
                           precision=self.precision, device=self.device, threads=self.threads, **sub)

    def plan(self) -> dict[str, list[TrainConfig]]:
        """Runs per question; an architecture shared by two questions (Q2 = Q4 at L=1) is one run."""
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
        # why seeds differ: diagnostics runs (their own records), then init seed a x data seed b at the deepest
        diag = [L for L in DIAG_LAYERS if L in layers]
        if self.diagnose and diag:
            d = lambda L, a, b: dataclasses.replace(mlp(L, width_for_budget(L, base.budget), a), init_seed=a,
                                                    data_seed=b, diagnostics=True)
            plan["diag"] = [d(L, s, s) for L in diag for s in seeds]
            swap = range(min(SWAP_SEEDS, self.seeds))
            plan["swap"] = [d(diag[-1], a, b) for a in swap for b in swap]  # the diagonal is in "diag"
        # the extension: per-L learning rate, chosen on validation; at the protocol's lr these are q4's runs
        plan["tune"] = [dataclasses.replace(mlp(L, width_for_budget(L, base.budget), s), lr=lr)
                        for L in layers for lr in self.lrs() for s in range(min(self.tune_seeds, self.seeds))]
        return plan
