"""The SGD step of one MLP written out by hand, no autograd and no torch.optim; train.py runs it per batch.

An MLP's backward is three lines per layer (tests/test_speed_paths.py checks the step against autograd in
float64): forward, softmax cross-entropy, backward, and the SGD update fused into the weight-gradient GEMM
(W <- W - lr dZ^T A, one pass over W instead of three), into buffers allocated once. On CUDA each full-batch
step is one CUDA-graph replay with no host sync (IndexedStep).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .data import MEAN, STD, Split, to_float
from .diagnostics import weight_grad_norm

# Evaluation batch: large enough for efficient GEMMs, small enough that a process's activations stay in the
# tens of MB (10,000 took 0.15 s and +170 MB of peak RSS per pass for 784-1024-10; 2,000 takes 0.13 s).
EVAL_BATCH = 2_000


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sgd_gemm_(W, g, a, lr: float):
    """W <- W - lr g^T a inside the GEMM (beta = 1): W is read and written once, no gradient tensor."""
    return W.addmm_(g.t(), a, alpha=-lr)


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


def precision_note(cfg) -> str | None:
    """One line for the user where --precision bf16 will be emulated here (no speed-up to expect), else None."""
    if cfg.precision != "bf16" or cfg.model != "mlp" or bf16_gemm(resolve_device(cfg.device)) == "native":
        return None
    return ("note: this CPU has no bf16 matmul units (AVX512-BF16 or AMX): bf16 is emulated with fp32 GEMMs on "
            "bf16-rounded values, the same numbers but slower than fp32; use --precision fp32 for speed")


class Engine:
    """One MLP's weights as plain tensors, trained by a hand-written SGD step, no autograd.

    W[l] (out, in) and b[l] (1, out) are the fp32 master weights of layer l (the last one gives the logits).
    In bf16 the hidden layers compute from bf16 copies, refreshed after each update.
    """

    def __init__(self, model: nn.Module, lr: float, bf16: bool, normalize: bool, device,
                 emulate_bf16: bool | None = None):
        layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.n = len(layers)
        self.W = [m.weight.detach().to(device, copy=True) for m in layers]
        self.b = [m.bias.detach().to(device, copy=True).unsqueeze(0) for m in layers]
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

    def tensors(self) -> list[torch.Tensor]:
        """Everything a step writes that outlives it (for the CUDA-graph warm-up to restore)."""
        return [*self.W, *self.b, *(c for c, m in zip(self.Wc, self.W) if c is not m),
                *(c for c, m in zip(self.bc, self.b) if c is not m)]

    def _buffers(self, B: int) -> dict:
        """Activations and gradients for batch size B, allocated once (the last batch of an epoch is smaller)."""
        if B not in self._bufs:
            dev, fdt = self.W[0].device, self.fdt
            outs, ins = [W.size(0) for W in self.W], [W.size(1) for W in self.W]

            def e(*shape, dt=fdt):
                return torch.empty(shape, dtype=dt, device=dev)

            low = self.low
            self._bufs[B] = dict(
                x=e(B, ins[0]),  # (B, 784) pixels in [0, 1]
                a=[e(B, outs[l], dt=self.cdt[l]) for l in range(self.n)],  # layer outputs, logits last
                lo=[e(B, ins[l], dt=self.cdt[l]) if self.convert[l] else None for l in range(self.n)],
                da=[e(B, ins[l], dt=self.cdt[l]) if l else None for l in range(self.n)],  # dL/d(input of l)
                g=[e(B, outs[l], dt=self.cdt[l]) if low[l] else None for l in range(self.n)],
                dW=[e(outs[l], ins[l], dt=self.cdt[l]) if low[l] else None for l in range(self.n)],
                db=[e(1, outs[l]) if low[l] else None for l in range(self.n)],
                neg1=torch.full((B, 1), -1.0, dtype=fdt, device=dev),
                ones=torch.ones((B, 1), dtype=fdt, device=dev),
            )
        return self._bufs[B]

    def step(self, xb: torch.Tensor, yb: torch.Tensor, loss_out: torch.Tensor,
             grad_norms: torch.Tensor | None = None) -> None:
        """One SGD step on a batch: xb uint8 (B, 784), yb int64 (B,).

        grad_norms (n_layers,): where given, layer l's ||dL/dW_l||_F before the update is written to it
        (diagnostics.py; it reads the step's tensors, never writes them: the step's numbers are unchanged).

        Writes the mean cross-entropy to loss_out (a 0-d tensor). No host sync, no allocation but small
        (B, 10) temporaries, so it can be captured in a CUDA graph. In bf16 the hidden layers' GEMMs
        (forward, input gradient, weight gradient) take bf16 operands, as under autocast: the pixels and
        activations rounded, the weights from their bf16 copies; the weight gradient (bf16) and the bias
        gradient (summed in fp32) update the fp32 master weights, which are then copied to bf16 again. The
        10-way head, the loss and its gradient stay fp32. Emulated bf16 does the same rounding on fp32
        tensors, with fp32 GEMMs.
        """
        B = yb.shape[0]
        buf = self._buffers(B)
        h = buf["x"].copy_(xb).div_(255)  # as data.to_float
        if self.normalize:
            h.sub_(MEAN).div_(STD)
        acts = []  # acts[l]: the input of layer l in its compute precision (post-ReLU output of layer l-1)
        rnd = self._round  # emulated bf16: round where a bf16 GEMM would write bf16; otherwise a no-op
        for l in range(self.n):
            if self.convert[l]:
                h = rnd(buf["lo"][l].copy_(h), l)
            acts.append(h)
            h = rnd(torch.addmm(self.bc[l], h, self.Wc[l].t(), out=buf["a"][l]), l)
            if l < self.n - 1:
                h.relu_()
        y = yb.unsqueeze(-1)
        lsm = torch.log_softmax(h, -1)  # h: (B, 10) logits, fp32
        loss_out.copy_(lsm.gather(-1, y).mean((-2, -1))).neg_()
        g = lsm.exp_().scatter_add_(-1, y, buf["neg1"]).mul_(1.0 / B)  # dL/dz = (softmax - onehot) / B

        for l in range(self.n - 1, -1, -1):
            if l < self.n - 1 and self.low[l] != self.low[l + 1]:  # the head's fp32 gradient, rounded to bf16
                g = rnd(buf["g"][l].copy_(g), l)
            if grad_norms is not None:
                grad_norms[l] = weight_grad_norm(g, acts[l])
            if l > 0:  # the input's gradient, with the weights before this step's update
                da = rnd(torch.mm(g, self.Wc[l], out=buf["da"][l]), l)
            if not self.low[l]:
                _sgd_gemm_(self.W[l], g, acts[l], self.lr)
                _sgd_gemm_(self.b[l], buf["ones"], g, self.lr)  # b <- b - lr 1^T g: the batch sum, in one op
            else:
                dW = rnd(torch.mm(g.t(), acts[l], out=buf["dW"][l]), l)  # a bf16 GEMM, (out, in)
                self.W[l].add_(dW, alpha=-self.lr)
                db = torch.sum(g, -2, keepdim=True, dtype=self.fdt, out=buf["db"][l])  # (1, out)
                self.b[l].add_(db, alpha=-self.lr)
                rnd(self.Wc[l].copy_(self.W[l]), l)  # a fresh bf16 copy for the next forward
                rnd(self.bc[l].copy_(self.b[l]), l)
            if l > 0:  # through the ReLU: zero where its output was 0
                g = torch.ops.aten.threshold_backward.grad_input(da, acts[l], 0, grad_input=da)

    @torch.no_grad()
    def evaluate(self, split: Split, batch: int = EVAL_BATCH) -> dict:
        """The mean loss and accuracy over a split with the fp32 weights, in large batches; predictions."""
        loss_sum = torch.zeros((), dtype=torch.float64, device=split.x.device)
        preds = []
        for lo in range(0, len(split.y), batch):
            a = to_float(split.x[lo:lo + batch], self.normalize)
            for l in range(self.n):
                a = torch.addmm(self.b[l][0], a, self.W[l].t())
                if l < self.n - 1:
                    a = a.relu_()
            y = split.y[lo:lo + batch]
            loss_sum += F.cross_entropy(a.float(), y, reduction="sum").double()
            preds.append(a.argmax(1))
        pred = torch.cat(preds)
        n = len(split.y)
        return dict(loss=float(loss_sum) / n, acc=float((pred == split.y).sum()) / n, pred=pred.cpu())

    def state_dict(self, model: nn.Module) -> dict:
        """The weights under `model`'s state_dict names, as CPU copies."""
        names = (name for name, m in model.named_modules() if isinstance(m, nn.Linear))
        return {f"{name}.{k}": t.detach().cpu().clone() for name, W, b in zip(names, self.W, self.b)
                for k, t in (("weight", W), ("bias", b[0]))}

    @torch.no_grad()
    def write_back(self, model: nn.Module) -> None:
        model.load_state_dict(self.state_dict(model))


@contextlib.contextmanager
def _no_denormals(dev: torch.device):
    """Flush denormal floats to zero while training on the CPU. A softmax that underflows to ~1e-39 makes
    the next matmuls ~50x slower on x86 (microcode assists); flushing changes only values below 1.2e-38."""
    flushing = dev.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


# ---- CUDA: one graph replay per step ------------------------------------------------------------------------


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
        self.loss = torch.empty((), device=dev)
        self.graph, self.replay = None, self._step  # replay: one step, eager or as the captured graph
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
            self.replay = self.graph.replay

    def _step(self):
        idx = self.t * self.bs + self.offsets  # (B,) rows of batch t
        self.eng.step(self.xs.index_select(0, idx), self.ys.index_select(0, idx), self.loss)
        self.losses.index_copy_(0, self.t, self.loss.unsqueeze(0))
        self.t += 1

    def start_epoch(self):
        self.t.zero_()


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


