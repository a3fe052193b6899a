"""The sampled softmax's three (B, K, d) GEMMs on torch's matmul (MKL sgemm) and on oneDNN
(softmaxlab.sampled_kernels.linear, what the Functions use for float32 on the CPU), at the headline and grid
shapes, and one elementwise pass over the (B, K) logits for scale.

    python benchmarks/sampled_gemm.py            # ~1 min; torch's default threads
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import machine, table  # noqa: E402

from softmaxlab.sampled_kernels import linear  # noqa: E402

SHAPES = [(1024, 4096, 128), (256, 256, 128), (256, 8192, 512), (2048, 2048, 128), (2048, 8192, 512)]


def median_ms(f, n: int = 11) -> float:
    for _ in range(3):
        f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def main() -> int:
    print(f"machine: {machine()}")
    rows = []
    for B, K, d in SHAPES:
        g = torch.Generator().manual_seed(0)
        x, Ws, G = (torch.randn(*s, generator=g) for s in ((B, d), (K, d), (B, K)))
        gflop = 2 * B * K * d / 1e9
        torch_ms = [median_ms(f) for f in (lambda: x @ Ws.T, lambda: G @ Ws, lambda: (x.T @ G).T)]
        dnn_ms = [median_ms(f) for f in (lambda: linear(x, Ws), lambda: linear(G, Ws.T), lambda: linear(x.T, G.T).T)]
        exp_ms = median_ms(lambda: torch.exp(G))
        rows.append([f"{B}x{K}x{d}", f"{sum(torch_ms):.2f}", f"{3 * gflop / sum(torch_ms) * 1e3:.0f}",
                     f"{sum(dnn_ms):.2f}", f"{3 * gflop / sum(dnn_ms) * 1e3:.0f}",
                     f"{sum(torch_ms) / sum(dnn_ms):.2f}x", f"{exp_ms:.2f}"])
    print(table(["B x K x d", "matmul ms (3 GEMMs)", "matmul GFLOP/s", "oneDNN ms", "oneDNN GFLOP/s",
                 "oneDNN speed-up", "one (B, K) exp pass ms"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
