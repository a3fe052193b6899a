"""One training epoch (50,000 MNIST images, batch 64, SGD lr 0.01) of the L = 1 and L = 8 equal-budget MLPs.

    python benchmarks/epoch.py [--repeats 3] [--threads N] [--data-dir DIR]

Reports, all measured in this one run: seconds per epoch of softmaxlab's trainer (fp32 and bf16), the same
epoch through a TensorDataset + DataLoader + autograd + torch.optim loop (the tutorial way), achieved
GFLOP/s (6 x params x 50,000 / seconds) beside a large-matmul GFLOP/s measured here, and the ratios.
Each time is the best of --repeats, the variants interleaved so that a busy machine hurts them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TRAIN, executed_flops, machine, matmul_peak, params, table, train_flops  # noqa: E402

from softmaxlab.mnist.configs import TrainConfig  # noqa: E402
from softmaxlab.mnist.data import to_float  # noqa: E402
from softmaxlab.mnist.engine import bf16_gemm  # noqa: E402
from softmaxlab.mnist.study import load_data  # noqa: E402
from softmaxlab.mnist.train import init_model, train  # noqa: E402


def softmaxlab_epoch(data, layers: int, precision: str, device: str = "cpu") -> float:
    """Training seconds of one epoch of train() (the per-epoch validation pass is not counted)."""
    cfg = TrainConfig(model="mlp", layers=layers, epochs=1, precision=precision, device=device, eval_subset=1000)
    return train(cfg, data)["train_time_s"]


def dataloader_epoch(data, layers: int) -> float:
    """The same epoch as a tutorial writes it: TensorDataset + DataLoader(shuffle) + autograd + optim.SGD."""
    from torch.utils.data import DataLoader, TensorDataset

    model, _ = init_model(TrainConfig(model="mlp", layers=layers))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ds = TensorDataset(to_float(data.train.x), data.train.y)
    loader = DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def compiled_epoch(data, layers: int) -> tuple[float, float, float]:
    """(compile s, compiled epoch s, eager epoch s) of the trainer's step under torch.compile, same loop."""
    from softmaxlab.mnist.engine import Engine

    model, _ = init_model(TrainConfig(model="mlp", layers=layers))
    eng = Engine(model, 0.01, False, False, "cpu")
    x, y, bs = data.train.x, data.train.y, 64
    losses = torch.empty(-(-x.shape[0] // bs))
    step = torch.compile(eng.step, dynamic=False)
    t0 = time.perf_counter()
    step(x[:bs], y[:bs], losses[0])
    compile_s = time.perf_counter() - t0

    def epoch(fn):
        t0 = time.perf_counter()
        for s in range(x.shape[0] // bs):  # full batches only: a short last batch would compile again
            fn(x[s * bs:(s + 1) * bs], y[s * bs:(s + 1) * bs], losses[s])
        return time.perf_counter() - t0

    torch.set_flush_denormal(True)
    return compile_s, min(epoch(step) for _ in range(2)), min(epoch(eng.step) for _ in range(2))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--layers", default="1,8", help="hidden-layer counts, e.g. 1,8")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--compile", action="store_true", help="also time the step under torch.compile (L = 1)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.data_dir)
    layers = [int(v) for v in args.layers.split(",")]

    # emulated bf16 runs fp32 GEMMs: its roofline is the fp32 peak (and torch's bf16 fallback would take minutes)
    native16 = bf16_gemm("cpu") == "native"
    peak16_of = (lambda: matmul_peak(torch.bfloat16)) if native16 else (lambda: peak32)
    peak32 = matmul_peak(torch.float32)
    peak16 = peak16_of()
    variants = [(L, name, fn) for L in layers for name, fn in (
        ("softmaxlab fp32", lambda L=L: softmaxlab_epoch(data, L, "fp32")),
        ("softmaxlab bf16", lambda L=L: softmaxlab_epoch(data, L, "bf16")),
        ("TensorDataset + DataLoader fp32", lambda L=L: dataloader_epoch(data, L)),
    ) + ((  # the GPU path, where there is one: data resident on the device, a CUDA graph per step
        ("softmaxlab CUDA fp32", lambda L=L: softmaxlab_epoch(data, L, "fp32", "cuda")),
        ("softmaxlab CUDA bf16", lambda L=L: softmaxlab_epoch(data, L, "bf16", "cuda")),
    ) if torch.cuda.is_available() else ())]
    times: dict[tuple, list[float]] = {}
    for _ in range(args.repeats):
        for L, name, fn in variants:
            times.setdefault((L, name), []).append(fn())
    peak32 = max(peak32, matmul_peak(torch.float32))  # measured again after the epochs: the better of two
    peak16 = max(peak16, peak16_of())

    print(f"machine: {machine()}")
    print(f"command: python benchmarks/epoch.py --repeats {args.repeats}"
          + (f" --threads {args.threads}" if args.threads else "") + f" --layers {args.layers}"
          + (" --compile" if args.compile else ""))
    print(f"large matmul (2048^3): fp32 {peak32:.0f} GFLOP/s, "
          + (f"bf16 {peak16:.0f} GFLOP/s\n" if native16 else "bf16 not timed (no bf16 matmul units: softmaxlab "
             "emulates bf16 with fp32 GEMMs)\n"))
    rows = []
    for L in layers:
        base = min(times[(L, "TensorDataset + DataLoader fp32")])
        for _, name, _ in [v for v in variants if v[0] == L]:
            t = min(times[(L, name)])
            gf = train_flops(L) / t / 1e9
            if "CUDA" in name:  # against the GPU's own matmul peak
                peak = matmul_peak(torch.bfloat16 if "bf16" in name else torch.float32, 8192, device="cuda")
            else:
                peak = peak16 if "bf16" in name else peak32
            rows.append([f"L={L} ({params(L):,} params)", name, f"{t:.3f}",
                         f"{statistics.median(times[(L, name)]):.3f}", f"{gf:.0f}",
                         f"{100 * gf / peak:.0f}%", f"{executed_flops(L) / t / 1e9:.0f}", f"{base / t:.2f}x"])
    print(table(["model", "loop", "s/epoch (best)", "s/epoch (median)", "GFLOP/s (6N)",
                 "of matmul peak", "GFLOP/s executed", "vs DataLoader"], rows))
    if args.compile:
        c, tc, te = compiled_epoch(data, 1)
        print(f"\ntorch.compile of the L=1 step: compile {c:.1f} s, epoch {tc:.3f} s compiled vs {te:.3f} s eager "
              f"(it pays after {c / (te - tc):.0f} epochs)" if tc < te else
              f"\ntorch.compile of the L=1 step: compile {c:.1f} s, epoch {tc:.3f} s compiled vs {te:.3f} s eager: "
              f"never pays")
    print(f"\n6N = 6 x params x {TRAIN:,} images per epoch; 'executed' leaves out the first layer's input "
          f"gradient, which no loop computes. bf16 rows are compared with the "
          f"{'bf16' if native16 else 'fp32 (emulated bf16)'} matmul peak.")


if __name__ == "__main__":
    main()
