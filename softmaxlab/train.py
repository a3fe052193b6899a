"""One training run under the assignment's protocol: SGD, batch 64, lr 0.01, 5 epochs, in-memory tensors.

The loop is nanoGPT-plain: data lives on the device as uint8, each epoch is one randperm from a seeded
generator, batches are slices. A run can checkpoint after every epoch and resume bit-for-bit on the CPU.

The step is written out by hand instead of going through autograd and torch.optim (an MLP's backward is
three lines per layer; tests/test_speed_paths.py checks it against autograd in float64): forward, softmax
cross-entropy, backward, and the SGD update fused into the weight-gradient GEMM (W <- W - lr dZ^T A, one
pass over W instead of three), into buffers allocated once. The weights of S runs of one architecture are
stacked (S, out, in), so the same step trains several seeds together (batched.py); train() is S = 1.
On CUDA each full-batch step is one CUDA-graph replay with no host sync.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import MEAN, STD, to_float
from .errors import SoftmaxlabError
from .models import BUDGET, build, param_count, width_for_budget


@dataclass(frozen=True)
class TrainConfig:
    model: str = "mlp"
    """linear (Q1 softmax classifier) or mlp (ReLU hidden layers)."""
    layers: int = 1
    """Hidden layers L of the MLP (ignored for linear)."""
    width: int | None = None
    """Hidden width k; None picks the width that keeps L layers at `budget` parameters (Q3)."""
    budget: int = BUDGET
    """Parameter budget for width=None (814,090: the 784-1024-10 MLP)."""
    init: str = "glorot"
    """glorot (Keras's default, as the assignment's Keras runs: Glorot-uniform weights, zero biases) or torch
    (PyTorch's default: uniform +/- 1/sqrt(fan_in))."""
    lr: float = 0.01
    """SGD learning rate."""
    batch_size: int = 64
    """Examples per SGD step."""
    epochs: int = 5
    """Passes over the 50,000 training images."""
    seed: int = 0
    """Seeds the initialisation and the per-epoch shuffle."""
    normalize: bool = False
    """Standardise pixels (mean 0.1307, std 0.3081) instead of the assignment's plain /255."""
    train_subset: int | None = None
    """Train on the first N examples of the training split only (smoke tests); None: all 50,000."""
    eval_subset: int | None = None
    """Evaluate on the first N validation and test examples only (smoke tests); None: all."""
    precision: str = "fp32"
    """fp32, or bf16: the hidden layers' matmuls (forward, backward) in bfloat16 with fp32 master weights,
    updates and loss; the 10-way output layer stays fp32 (on a CPU a 10-wide bf16 matmul is slower, not
    faster). Evaluation is fp32. On a CPU without bf16 matmul units (AVX512-BF16, AMX) the bf16 GEMMs are
    emulated with fp32 ones on bf16-rounded values: the same numbers, no speed-up (result: bf16_gemm)."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda. Not part of the run's identity."""
    threads: int | None = None
    """torch intra-op threads; None leaves torch's default. Not part of the run's identity."""
    cuda_graph: bool = True
    """On CUDA, replay each full-batch SGD step as one CUDA graph (no per-step launches or syncs). Not part
    of the run's identity."""

    def validate(self) -> TrainConfig:
        def bad(name, fix):
            raise SoftmaxlabError(f"{name}={getattr(self, name)!r} is invalid: {fix}")

        if self.model not in ("linear", "mlp"):
            bad("model", "use linear or mlp")
        for name in ("layers", "epochs", "batch_size", "budget"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(name, "pass a positive integer")
        if self.width is not None and (not isinstance(self.width, int) or isinstance(self.width, bool)
                                       or self.width < 1):
            bad("width", "pass a positive integer, or auto for the equal-parameter width")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            bad("lr", "pass a finite learning rate > 0")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            bad("seed", "pass an integer >= 0")
        for name in ("train_subset", "eval_subset"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                bad(name, "pass a positive integer or leave it unset")
        if self.init not in ("torch", "glorot"):
            bad("init", "use torch or glorot")
        if self.precision not in ("fp32", "bf16"):
            bad("precision", "use fp32 or bf16")
        if self.device not in ("auto", "cpu", "cuda"):
            bad("device", "use auto, cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            bad("device", "no CUDA device is visible here; use --device cpu or auto")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "pass a positive integer")
        if self.model == "mlp" and self.width is None:
            width_for_budget(self.layers, self.budget)  # a budget too small for L layers: say so before any work
        return self

    def identity(self) -> dict:
        """The fields that decide the result (device, threads and cuda_graph only decide the speed)."""
        d = dataclasses.asdict(self)
        for name in ("device", "threads", "cuda_graph"):
            d.pop(name)
        if self.model == "linear":
            d["layers"], d["width"] = 0, 0
        elif self.width is None:  # width=None and the width it resolves to are the same run
            d["width"] = width_for_budget(self.layers, self.budget)
        return d


@dataclass
class Split:
    """One split held in memory: x uint8 (N, 784), y int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def to(self, device) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def head(self, n: int | None) -> Split:
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass
class Data:
    train: Split
    val: Split
    test: Split

    @staticmethod
    def from_mnist(splits: dict) -> Data:
        """From data.mnist_split's {'train'|'val'|'test': (uint8 (N,28,28), uint8 (N,))}."""
        return Data(*(Split(splits[k][0].reshape(len(splits[k][0]), -1).contiguous(), splits[k][1].long())
                      for k in ("train", "val", "test")))


@dataclass
class Checkpoint:
    """What resuming needs, saved after every epoch (tensors and plain types only: weights_only loads it)."""

    epoch: int
    model: dict
    optimizer: dict
    shuffle_rng: torch.Tensor
    history: list = field(default_factory=list)
    train_time_s: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def init_model(cfg: TrainConfig):
    """The model with its seeded initialisation, independent of the global RNG's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build(cfg.model, cfg.layers, cfg.width, cfg.init, cfg.budget)


# Evaluation batch: large enough for efficient GEMMs, small enough that a process's activations stay in the
# tens of MB (10,000 took 0.15 s and +170 MB of peak RSS per pass for 784-1024-10; 2,000 takes 0.13 s).
EVAL_BATCH = 2_000


@torch.no_grad()
def evaluate(model, split: Split, normalize: bool, batch: int = EVAL_BATCH) -> dict:
    """Mean loss and accuracy over a split, in large batches; predictions for the error grid."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
    preds = []
    for i in range(0, len(split.y), batch):
        logits = model(to_float(split.x[i:i + batch], normalize)).float()
        y = split.y[i:i + batch]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    n = len(split.y)
    return dict(loss=float(loss_sum) / n, acc=float((pred == split.y).sum()) / n, pred=pred.cpu())


def train(
    cfg: TrainConfig,
    data: Data,
    checkpoint: str | os.PathLike | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = False,
    keep_model: bool = False,
) -> dict:
    """Train one model; return its metrics. With `checkpoint`, resume from it and save to it every epoch.

    A non-finite loss stops the run and returns status 'diverged' with the epoch and step where it happened.
    """
    return fit([cfg], data, [checkpoint], [on_epoch], progress, keep_model)[0]


CHECK_EVERY = 32  # CPU steps between finiteness checks: a diverged run stops within this many steps


@dataclass
class _Run:
    """One run's state while it trains in a group."""

    cfg: TrainConfig
    model: nn.Module
    width: int
    rng: torch.Generator  # the shuffle order; on the CPU so it is identical on every device
    checkpoint: str | os.PathLike | None
    on_epoch: Callable[[dict], None] | None
    history: list = field(default_factory=list)
    start_epoch: int = 0
    train_time: float = 0.0
    diverged: dict | None = None


def fit(
    cfgs: list[TrainConfig],
    data: Data,
    checkpoints: list | None = None,
    on_epoch: list | None = None,
    progress: bool = False,
    keep_model: bool = False,
) -> list[dict]:
    """Train S runs that differ only in their seed, as one stack of S models; return train()'s dict for each.

    checkpoints / on_epoch: one per run (or None). Every run keeps its own init, shuffle order, checkpoint,
    history and divergence record; only the arithmetic is shared. train() is this with S = 1.
    The runs' thread count (cfg.threads) holds while they train; the caller's is restored after.
    """
    threads = torch.get_num_threads()
    try:
        return _fit(cfgs, data, checkpoints, on_epoch, progress, keep_model)
    finally:
        torch.set_num_threads(threads)


def _fit(cfgs, data, checkpoints, on_epoch, progress, keep_model) -> list[dict]:
    S = len(cfgs)
    checkpoints = list(checkpoints) if checkpoints is not None else [None] * S
    on_epoch = list(on_epoch) if on_epoch is not None else [None] * S
    if S == 0 or len(checkpoints) != S or len(on_epoch) != S:
        raise SoftmaxlabError(f"fit got {S} configs, {len(checkpoints)} checkpoints and {len(on_epoch)} "
                              f"callbacks: pass one of each per run")
    for c in cfgs:
        c.validate()
    cfg = cfgs[0]
    shared = {k: v for k, v in cfg.identity().items() if k != "seed"}
    for c in cfgs[1:]:
        other = {k: v for k, v in c.identity().items() if k != "seed"}
        if other != shared or (c.device, c.threads, c.cuda_graph) != (cfg.device, cfg.threads, cfg.cuda_graph):
            diff = sorted(k for k in set(shared) | set(other) if shared.get(k) != other.get(k)) or ["device"]
            raise SoftmaxlabError(f"runs trained together must differ only in seed; these also differ in "
                                  f"{', '.join(diff)}: train them separately")
    to_float(data.train.x[:1], cfg.normalize)  # uint8 pixels or a clear error, before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(cfg.device)

    group = []
    for c, ck_path, cb in zip(cfgs, checkpoints, on_epoch):
        model, width = init_model(c)
        r = _Run(c, model, width, torch.Generator().manual_seed(c.seed), ck_path, cb)
        if ck_path is not None and os.path.exists(ck_path):
            ck = load_checkpoint(ck_path)
            try:
                model.load_state_dict(ck.model)
            except (RuntimeError, KeyError) as e:
                raise SoftmaxlabError(f"checkpoint {ck_path} does not fit this run's model "
                                      f"({' '.join(str(e).split())[:100]}): delete it to restart that run") from None
            if ck.optimizer.get("state"):
                raise SoftmaxlabError(f"checkpoint {ck_path} holds optimizer state plain SGD does not have: "
                                      f"delete it to restart that run")
            r.rng.set_state(ck.shuffle_rng)
            r.history, r.start_epoch, r.train_time = list(ck.history), ck.epoch, ck.train_time_s
        group.append(r)
    start = {r.start_epoch for r in group}
    if len(start) > 1:
        raise SoftmaxlabError(f"runs trained together must resume from the same epoch (checkpoints at epochs "
                              f"{sorted(start)}): train them separately")
    start_epoch = start.pop()

    train_split = data.train.head(cfg.train_subset).to(dev)
    val_split = data.val.head(cfg.eval_subset).to(dev)
    test_split = data.test.head(cfg.eval_subset).to(dev)
    n, bs = len(train_split.y), cfg.batch_size
    steps, full = math.ceil(n / bs), n // bs
    eng = Engine([r.model for r in group], cfg.lr, cfg.precision == "bf16", cfg.normalize, dev)
    xs = torch.empty((S, n, train_split.x.shape[1]), dtype=torch.uint8, device=dev)  # this epoch's order
    ys = torch.empty((S, n), dtype=torch.long, device=dev)
    losses = torch.empty((steps, S), device=dev)  # (step, run), filled without a host sync
    label = _run_label(cfg, group[0].width) + (f" x{S} seeds" if S > 1 else "")
    bar = _bar(progress, cfg.epochs * steps, start_epoch * steps, label)
    graph, graph_error = None, None
    alive = [True] * S

    with _no_denormals(dev):
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            for i, r in enumerate(group):
                perm = torch.randperm(n, generator=r.rng).to(dev)
                torch.index_select(train_split.x, 0, perm, out=xs[i])  # one gather per epoch, then slices
                torch.index_select(train_split.y, 0, perm, out=ys[i])
            if graph is None and graph_error is None and full > 0 and _use_graph(dev, cfg):
                graph, graph_error = _capture(eng, xs, ys, losses, bs)
            done = steps
            if graph is not None:  # CUDA: one replay per full batch, the last partial batch eagerly
                graph.start_epoch()
                for _ in range(full):
                    graph.replay()
                if full < steps:
                    eng.step(xs[:, full * bs:], ys[:, full * bs:], losses[full])
                if bar is not None:
                    bar.update(steps)
            else:
                check = dev.type == "cpu"  # on the CPU a check is not a sync; on CUDA, once per epoch
                for s in range(steps):
                    eng.step(xs[:, s * bs:(s + 1) * bs], ys[:, s * bs:(s + 1) * bs], losses[s])
                    if bar is not None:
                        bar.update(1)
                    if check and (s + 1) % CHECK_EVERY == 0:
                        ok = torch.isfinite(losses[:s + 1]).all(0).tolist()
                        if not any(a and o for a, o in zip(alive, ok)):
                            done = s + 1
                            break
            finite = torch.isfinite(losses[:done]).cpu()
            elapsed = time.perf_counter() - t0
            trained = [i for i in range(S) if alive[i]]
            for i in trained:
                r = group[i]
                r.train_time += elapsed / len(trained)  # a group's time is shared evenly by its runs
                if not bool(finite[:, i].all()):
                    bad = int((~finite[:, i]).nonzero()[0])
                    r.diverged, alive[i] = dict(epoch=epoch + 1, step=bad + 1), False
            mean_loss = losses[:done].double().mean(0).tolist()
            for i in trained:
                r = group[i]
                if not alive[i]:
                    continue
                t_eval = time.perf_counter()
                val = eng.evaluate(i, val_split)
                rec = dict(epoch=epoch + 1, train_loss=mean_loss[i], val_loss=val["loss"], val_acc=val["acc"],
                           epoch_time_s=elapsed / len(trained) + time.perf_counter() - t_eval)
                r.history.append(rec)
                if r.checkpoint is not None:
                    save_checkpoint(r.checkpoint, Checkpoint(epoch + 1, eng.state_dict(i, r.model),
                                                             _sgd_state(cfg.lr, eng.n), r.rng.get_state(),
                                                             r.history, r.train_time))
                if r.on_epoch is not None:
                    r.on_epoch(rec)
            if not any(alive):
                break
    if bar is not None:
        bar.close()

    results = []
    for i, r in enumerate(group):
        out = {}
        if keep_model:
            eng.write_back(i, r.model)
            out["model"] = r.model.to(dev)
        out.update(status="ok", width=r.width, params=param_count(r.model), epochs_done=len(r.history),
                   history=r.history, train_time_s=r.train_time, device=str(dev),
                   threads=torch.get_num_threads(), trained_with=S)
        if dev.type == "cuda":
            out.update(cuda_graph=graph is not None, **({"cuda_graph_error": graph_error} if graph_error else {}))
        if any(eng.low):
            out["bf16_gemm"] = "emulated" if eng.emulate else "native"
        if r.diverged is not None:
            out.update(status="diverged", diverged_at=r.diverged)
            results.append(out)
            continue
        test = eng.evaluate(i, test_split)
        wrong = (test["pred"] != test_split.y.cpu()).nonzero().flatten()
        out.update(test_acc=test["acc"], test_loss=test["loss"], val_acc=r.history[-1]["val_acc"],
                   val_loss=r.history[-1]["val_loss"],
                   test_errors=[[int(j), int(test["pred"][j])] for j in wrong])
        results.append(out)
    return results


# ---- the step ---------------------------------------------------------------------------------------------


def _linear(out, a, W, b):
    """out = a W^T + b: one model (2-D: a (B, in), W (out, in), b (1, out)) or S stacked (3-D, bmm)."""
    if a.dim() == 2:
        return torch.addmm(b, a, W.t(), out=out)
    return torch.baddbmm(b, a, W.transpose(1, 2), out=out)


def _mm(out, a, b):
    return torch.mm(a, b, out=out) if a.dim() == 2 else torch.bmm(a, b, out=out)


def _sgd_gemm_(W, g, a, lr: float):
    """W <- W - lr g^T a inside the GEMM (beta = 1): W is read and written once, no gradient tensor."""
    if W.dim() == 2:
        return W.addmm_(g.t(), a, alpha=-lr)
    return W.baddbmm_(g.transpose(1, 2), a, alpha=-lr)


def bf16_gemm(device) -> str:
    """'native' where bf16 GEMMs run on bf16 hardware (CUDA; a CPU with AVX512-BF16 or AMX), else 'emulated'.

    Elsewhere (AVX2, plain AVX-512) CPU PyTorch multiplies bf16 in a fallback kernel: on a 2-core AVX2 EPYC a
    whole bf16 step of the study's MLPs took 5-8x as long as an fp32 one (benchmarks/gemm.py).
    """
    if torch.device(device).type != "cpu":
        return "native"
    cpu = torch.cpu
    try:
        return "native" if cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported() else "emulated"
    except AttributeError:  # a torch without these probes: ask oneDNN, which covers the same CPUs and more
        return "native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "emulated"


def precision_note(cfg: TrainConfig) -> str | None:
    """One line for the user where --precision bf16 will be emulated here (no speed-up to expect), else None."""
    if cfg.precision != "bf16" or cfg.model != "mlp" or bf16_gemm(resolve_device(cfg.device)) == "native":
        return None
    return ("note: this CPU has no bf16 matmul units (AVX512-BF16 or AMX): bf16 is emulated with fp32 GEMMs on "
            "bf16-rounded values, the same numbers but slower than fp32; use --precision fp32 for speed")


class Engine:
    """S same-shaped MLPs as stacked tensors, trained by a hand-written SGD step, no autograd.

    W[l] (S, out, in) and b[l] (S, 1, out) are the fp32 master weights of layer l (the last one gives the
    logits). The step works on views: 2-D ones for S = 1 (mm/addmm, the fastest kernels, no per-op slicing),
    3-D ones for S > 1 (bmm). In bf16 the hidden layers compute from bf16 copies, refreshed after each update.
    """

    def __init__(self, models: list[nn.Module], lr: float, bf16: bool, normalize: bool, device,
                 emulate_bf16: bool | None = None):
        per_model = [[m for m in model.modules() if isinstance(m, nn.Linear)] for model in models]
        self.n, self.S = len(per_model[0]), len(models)
        self.W = [torch.stack([ls[l].weight.detach() for ls in per_model]).to(device) for l in range(self.n)]
        self.b = [torch.stack([ls[l].bias.detach() for ls in per_model]).unsqueeze(1).to(device)
                  for l in range(self.n)]
        self.lr, self.normalize = lr, normalize
        self.fdt = self.W[0].dtype  # master dtype (float32; float64 in the autograd check)
        # the layers that compute in bf16: the hidden ones; the head stays fp32, it is 10 wide (nothing to gain)
        self.low = [bf16 and l < self.n - 1 for l in range(self.n)]
        # Without bf16 matmul units the bf16 GEMM is a fallback 3-8x slower than fp32: emulate it instead, the same
        # numbers (operands rounded to bf16, exact products, fp32 sums, the output rounded) from fp32 GEMMs on
        # tensors that hold bf16 values, in fp32 storage
        self.emulate = any(self.low) and (bf16_gemm(self.W[0].device) == "emulated" if emulate_bf16 is None
                                          else emulate_bf16)
        # storage dtype of each layer's compute tensors (weight copies, activations, gradients)
        self.cdt = [torch.bfloat16 if low and not self.emulate else self.fdt for low in self.low]
        self._scratch = torch.empty(0, dtype=torch.bfloat16, device=self.W[0].device)  # emulation's, grown once
        self.Wc = [self._lowered(W, l) for l, W in enumerate(self.W)]  # the weights as the GEMMs see them
        self.bc = [self._lowered(b, l) for l, b in enumerate(self.b)]
        v = self._view
        self.Wv, self.bv = [v(w) for w in self.W], [v(b) for b in self.b]
        self.Wcv, self.bcv = [v(w) for w in self.Wc], [v(b) for b in self.bc]
        # where a layer's input changes precision first: the pixels to bf16 for layer 0, the last hidden layer's
        # bf16 output to fp32 for the head (emulated: bf16 values in fp32 storage are fp32 already)
        prev = [False] + self.low[:-1]
        self.convert = [lo != p and (lo or not self.emulate) for lo, p in zip(self.low, prev)]
        self._bufs: dict[int, dict] = {}

    def _lowered(self, t: torch.Tensor, l: int) -> torch.Tensor:
        """Layer l's compute copy of a master tensor: itself (fp32 layers), bf16, or bf16 values in fp32."""
        if not self.low[l]:
            return t
        return t.to(torch.bfloat16) if not self.emulate else self._round(t.clone(), l)

    def _round(self, t: torch.Tensor, l: int) -> torch.Tensor:
        """Emulation only: round layer l's fp32 tensor t to bf16 in place (as the bf16 GEMM rounds its output)."""
        if self.emulate and self.low[l]:
            if self._scratch.numel() < t.numel():
                self._scratch = torch.empty(t.numel(), dtype=torch.bfloat16, device=t.device)
            t.copy_(self._scratch[:t.numel()].view(t.shape).copy_(t))  # two copies: fp32 -> bf16 -> fp32
        return t

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t[0] if self.S == 1 else t

    def tensors(self) -> list[torch.Tensor]:
        """Everything a step writes that outlives it (for the CUDA-graph warm-up to restore)."""
        return [*self.W, *self.b, *(c for c, m in zip(self.Wc, self.W) if c is not m),
                *(c for c, m in zip(self.bc, self.b) if c is not m)]

    def _buffers(self, B: int) -> dict:
        """Activations and gradients for batch size B, allocated once (the last batch of an epoch is smaller)."""
        if B not in self._bufs:
            dev, fdt = self.W[0].device, self.fdt
            lead = () if self.S == 1 else (self.S,)
            outs, ins = [W.size(1) for W in self.W], [W.size(2) for W in self.W]

            def e(*shape, dt=fdt):
                return torch.empty(lead + shape, dtype=dt, device=dev)

            low = self.low
            self._bufs[B] = dict(
                x=e(B, ins[0]),  # ([S,] B, 784) pixels in [0, 1]
                a=[e(B, outs[l], dt=self.cdt[l]) for l in range(self.n)],  # layer outputs, logits last
                lo=[e(B, ins[l], dt=self.cdt[l]) if self.convert[l] else None for l in range(self.n)],
                da=[e(B, ins[l], dt=self.cdt[l]) if l else None for l in range(self.n)],  # dL/d(input of l)
                g=[e(B, outs[l], dt=self.cdt[l]) if low[l] else None for l in range(self.n)],
                dW=[e(outs[l], ins[l], dt=self.cdt[l]) if low[l] else None for l in range(self.n)],
                db=[e(1, outs[l]) if low[l] else None for l in range(self.n)],
                neg1=torch.full(lead + (B, 1), -1.0, dtype=fdt, device=dev),
                ones=torch.ones(lead + (B, 1), dtype=fdt, device=dev),
            )
        return self._bufs[B]

    def step(self, xb: torch.Tensor, yb: torch.Tensor, loss_out: torch.Tensor) -> None:
        """One SGD step of every model on its own batch: xb uint8 (S, B, 784), yb int64 (S, B).

        Writes each model's mean cross-entropy to loss_out (S,). No host sync, no allocation but small
        (S, B, 10) temporaries, so it can be captured in a CUDA graph. In bf16 the hidden layers' GEMMs
        (forward, input gradient, weight gradient) take bf16 operands, as under autocast: the pixels and
        activations rounded, the weights from their bf16 copies; the weight gradient (bf16) and the bias
        gradient (summed in fp32) update the fp32 master weights, which are then copied to bf16 again. The
        10-way head, the loss and its gradient stay fp32. Emulated bf16 does the same rounding on fp32
        tensors, with fp32 GEMMs.
        """
        B = yb.shape[1]
        if self.S == 1:
            xb, yb = xb[0], yb[0]
        buf = self._buffers(B)
        x = buf["x"].copy_(xb).div_(255)  # as data.to_float
        if self.normalize:
            x.sub_(MEAN).div_(STD)
        acts = []  # acts[l]: the input of layer l in its compute precision (post-ReLU output of layer l-1)
        rnd = self._round  # emulated bf16: round where a bf16 GEMM would write bf16; otherwise a no-op
        h = x
        for l in range(self.n):
            if self.convert[l]:
                h = rnd(buf["lo"][l].copy_(h), l)
            acts.append(h)
            h = rnd(_linear(buf["a"][l], h, self.Wcv[l], self.bcv[l]), l)
            if l < self.n - 1:
                h.relu_()
        y = yb.unsqueeze(-1)
        lsm = torch.log_softmax(h, -1)  # h: ([S,] B, 10) logits, fp32
        loss_out.copy_(lsm.gather(-1, y).mean((-2, -1))).neg_()
        g = lsm.exp_().scatter_add_(-1, y, buf["neg1"]).mul_(1.0 / B)  # dL/dz = (softmax - onehot) / B

        for l in range(self.n - 1, -1, -1):
            if l < self.n - 1 and self.low[l] != self.low[l + 1]:  # the head's fp32 gradient, rounded to bf16
                g = rnd(buf["g"][l].copy_(g), l)
            if l > 0:  # the input's gradient, with the weights before this step's update
                da = rnd(_mm(buf["da"][l], g, self.Wcv[l]), l)
            if not self.low[l]:
                _sgd_gemm_(self.Wv[l], g, acts[l], self.lr)
                _sgd_gemm_(self.bv[l], buf["ones"], g, self.lr)  # b <- b - lr 1^T g: the batch sum, in one op
            else:
                dW = rnd(_mm(buf["dW"][l], g.transpose(-2, -1), acts[l]), l)  # a bf16 GEMM, (out, in)
                self.Wv[l].add_(dW, alpha=-self.lr)
                db = torch.sum(g, -2, keepdim=True, dtype=self.fdt, out=buf["db"][l])  # ([S,] 1, out)
                self.bv[l].add_(db, alpha=-self.lr)
                rnd(self.Wcv[l].copy_(self.Wv[l]), l)  # a fresh bf16 copy for the next forward
                rnd(self.bcv[l].copy_(self.bv[l]), l)
            if l > 0:  # through the ReLU: zero where its output was 0
                g = torch.ops.aten.threshold_backward.grad_input(da, acts[l], 0, grad_input=da)

    @torch.no_grad()
    def evaluate(self, i: int, split: Split, batch: int = EVAL_BATCH) -> dict:
        """Model i's mean loss and accuracy over a split with the fp32 weights, in large batches; predictions."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
        preds = []
        for lo in range(0, len(split.y), batch):
            a = to_float(split.x[lo:lo + batch], self.normalize)
            for l in range(self.n):
                a = torch.addmm(self.b[l][i, 0], a, self.W[l][i].t())
                if l < self.n - 1:
                    a = a.relu_()
            y = split.y[lo:lo + batch]
            loss_sum += F.cross_entropy(a.float(), y, reduction="sum").double()
            preds.append(a.argmax(1))
        pred = torch.cat(preds)
        n = len(split.y)
        return dict(loss=float(loss_sum) / n, acc=float((pred == split.y).sum()) / n, pred=pred.cpu())

    def _names(self, model: nn.Module) -> list[str]:
        return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]

    def state_dict(self, i: int, model: nn.Module) -> dict:
        """Model i's weights under `model`'s state_dict names, as CPU copies (a slice would save the stack)."""
        out = {}
        for l, name in enumerate(self._names(model)):
            out[f"{name}.weight"] = self.W[l][i].detach().cpu().clone()
            out[f"{name}.bias"] = self.b[l][i, 0].detach().cpu().clone()
        return out

    @torch.no_grad()
    def write_back(self, i: int, model: nn.Module) -> None:
        model.load_state_dict(self.state_dict(i, model))


def _sgd_state(lr: float, n_layers: int) -> dict:
    """What torch.optim.SGD(model.parameters(), lr).state_dict() holds for plain SGD: no state, one group."""
    params = [nn.Parameter(torch.zeros(1)) for _ in range(2 * n_layers)]
    return torch.optim.SGD(params, lr=lr, foreach=True).state_dict()


@contextlib.contextmanager
def _no_denormals(dev: torch.device):
    """Flush denormal floats to zero while training on the CPU. A softmax that underflows to ~1e-39 makes
    the next matmuls ~50x slower on x86 (microcode assists); flushing changes only values below 1.2e-38."""
    if dev.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# ---- CUDA: one graph replay per step ------------------------------------------------------------------------


def _use_graph(dev: torch.device, cfg: TrainConfig) -> bool:
    return dev.type == "cuda" and cfg.cuda_graph


class IndexedStep:
    """A full-batch step that finds its own batch: row t of the epoch's shuffled data, t a device counter.

    Nothing in it depends on a host value, so CUDA can capture it once and replay it for every step. With
    capture=False it runs eagerly (the CPU tests check it against the sliced step).
    """

    def __init__(self, eng: Engine, xs, ys, losses, bs: int, capture: bool):
        dev = xs.device
        self.eng, self.xs, self.ys, self.losses, self.bs = eng, xs, ys, losses, bs
        self.t = torch.zeros(1, dtype=torch.long, device=dev)
        self.offsets = torch.arange(bs, device=dev)
        self.loss = torch.empty(xs.size(0), device=dev)
        self.graph = None
        if capture:
            saved = [p.clone() for p in eng.tensors()]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (cuBLAS handles, workspaces) off the capture
                for _ in range(3):
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            for p, v in zip(eng.tensors(), saved):  # the warm-up trained: put the weights back
                p.copy_(v)
            self.t.zero_()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._step()

    def _step(self):
        idx = self.t * self.bs + self.offsets  # (B,) rows of batch t
        self.eng.step(self.xs.index_select(1, idx), self.ys.index_select(1, idx), self.loss)
        self.losses.index_copy_(0, self.t, self.loss.unsqueeze(0))
        self.t += 1

    def start_epoch(self):
        self.t.zero_()

    def replay(self):
        if self.graph is None:
            self._step()
        else:
            self.graph.replay()


def _capture(eng: Engine, xs, ys, losses, bs: int):
    """The captured step, or (None, why) if capture fails: then the run goes on eagerly, and says so."""
    saved = [p.clone() for p in eng.tensors()]
    try:
        return IndexedStep(eng, xs, ys, losses, bs, capture=xs.device.type == "cuda"), None
    except Exception as e:  # an unsupported op or driver: slower, not wrong
        with torch.no_grad():
            for p, v in zip(eng.tensors(), saved):
                p.copy_(v)
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def save_checkpoint(path, ck: Checkpoint) -> None:
    """Atomic: a kill mid-write leaves the previous checkpoint intact; a full disk is one clear error."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(dataclasses.asdict(ck), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's zip writer reports ENOSPC as a RuntimeError
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        why = getattr(e, "strerror", None) or " ".join(str(e).split())[:80]
        raise SoftmaxlabError(f"cannot write checkpoint {path}: {why}; free some space or pick a writable "
                              f"--out, then re-run to resume") from None


def load_checkpoint(path) -> Checkpoint:
    try:
        d = torch.load(path, weights_only=True, map_location="cpu")
        return Checkpoint(**d)
    except Exception as e:  # a checkpoint we cannot read is not a result: say so, do not guess
        raise SoftmaxlabError(f"checkpoint {path} is unreadable ({type(e).__name__}): delete it to restart "
                              f"that run") from None


def _run_label(cfg: TrainConfig, width: int) -> str:
    return "linear" if cfg.model == "linear" else f"mlp L={cfg.layers} k={width}"


def _bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)
