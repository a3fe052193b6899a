"""Why bf16 barely pays at batch 64 on a CPU: the step's pieces timed alone, fp32 vs bf16, one thread.

    python benchmarks/gemm.py [--threads 1]

For the two layer shapes that bound the study (784 -> 1024, the widest; 289 -> 289, the narrowest), times
the forward GEMM (64, in) x (in, out), the weight-gradient GEMM (out, 64) x (64, in) in fp32 (with the SGD
update fused, as the fp32 step does) and in bf16 (bf16 output), the fp32 master update from a bf16
gradient, and the refresh of the bf16 weight copy. Median of interleaved repeats, microseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402


def timeit(fn, n: int = 200) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    B, lr = 64, 0.01
    rows = []
    for i, o in [(784, 1024), (289, 289)]:
        W = torch.randn(o, i) * 0.01  # fp32 master, (out, in)
        Wc = W.bfloat16()  # its bf16 copy
        a, g = torch.randn(B, i), torch.randn(B, o)
        ab, gb = a.bfloat16(), g.bfloat16()
        z, zb = torch.empty(B, o), torch.empty(B, o, dtype=torch.bfloat16)
        dWb = torch.empty(o, i, dtype=torch.bfloat16)
        cases = {
            "forward GEMM fp32": lambda: torch.mm(a, W.t(), out=z),
            "forward GEMM bf16": lambda: torch.mm(ab, Wc.t(), out=zb),
            "weight grad + update, fp32 (one fused GEMM)": lambda: W.addmm_(g.t(), a, alpha=-lr * 1e-6),
            "weight grad GEMM bf16": lambda: torch.mm(gb.t(), ab, out=dWb),
            "fp32 master += bf16 grad": lambda: W.add_(dWb, alpha=-lr * 1e-6),
            "bf16 copy of the master": lambda: Wc.copy_(W),
        }
        times = {k: [] for k in cases}
        for _ in range(args.repeats):  # interleaved, so a busy moment hurts every case alike
            for k, fn in cases.items():
                times[k].append(timeit(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        flops = 2 * B * i * o
        for k, t in med.items():
            rows.append([f"{i} -> {o}", k, f"{t:.0f}", f"{flops / t / 1e3:.0f}" if "GEMM" in k else "-"])
        f32 = med["forward GEMM fp32"] + med["weight grad + update, fp32 (one fused GEMM)"]
        b16 = (med["forward GEMM bf16"] + med["weight grad GEMM bf16"] + med["fp32 master += bf16 grad"]
               + med["bf16 copy of the master"])
        rows.append([f"{i} -> {o}", "**forward + weight gradient + update: fp32 / bf16**", f"{f32:.0f} / {b16:.0f}",
                     f"{f32 / b16:.2f}x"])
    print(f"machine: {machine()}; threads {args.threads}")
    print(f"command: python benchmarks/gemm.py --threads {args.threads} --repeats {args.repeats}\n")
    print(table(["layer", "piece", "us (median)", "GFLOP/s (GEMMs) / bf16 speed-up"], rows))


if __name__ == "__main__":
    main()
