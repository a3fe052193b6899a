"""Shared by the benchmarks: the machine line, a large-matmul peak, FLOP counts and a markdown table."""

from __future__ import annotations

import os
import platform
import time

import torch

from softmaxlab.mnist.models import mlp_param_count, width_for_budget
from softmaxlab.mnist.records import cpu_model

TRAIN = 50_000  # images per epoch under the assignment's split


def machine() -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    from softmaxlab.mnist.engine import bf16_gemm

    return (f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, bf16 GEMMs {bf16_gemm('cpu')}), "
            f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}{gpu}; "
            f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}")


def matmul_peak(dtype=torch.float32, n: int = 2048, seconds: float = 1.5, device: str = "cpu") -> float:
    """GFLOP/s of an n x n x n matmul (2 n^3 FLOPs), best of repeated timings over about `seconds`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == float("inf"):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


PEAK_CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
from common import matmul_peak
torch.set_num_threads({threads})
print(matmul_peak({dtype}, seconds={seconds}), flush=True)
"""


def matmul_peak_concurrent(procs: int, threads: int = 1, dtype: str = "torch.float32",
                           seconds: float = 3.0) -> list[float]:
    """GFLOP/s of each of `procs` processes timing matmul_peak at once, `threads` threads each: the peak a
    process has while the others also compute (how softmaxlab's study workers run)."""
    import subprocess
    import sys
    from pathlib import Path

    code = PEAK_CHILD.format(here=str(Path(__file__).resolve().parent), threads=threads, dtype=dtype,
                             seconds=seconds)
    ps = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in ps]


def params(layers: int) -> int:
    """Parameters of the equal-budget MLP with `layers` hidden layers (0: the linear classifier)."""
    if layers == 0:
        return 784 * 10 + 10
    return mlp_param_count(layers, width_for_budget(layers))


def train_flops(layers: int, samples: int = TRAIN) -> float:
    """The usual 6 x params x samples (forward 2, backward 4 FLOPs per weight and sample)."""
    return 6.0 * params(layers) * samples


def executed_flops(layers: int, samples: int = TRAIN) -> float:
    """What an SGD step really multiplies: 6 x params minus the first layer's input gradient (pixels need
    none), i.e. 6N - 2 x 784 x k per sample. For 784-1024-10 this is 4.02 x params, not 6."""
    if layers == 0:
        return 4.0 * params(0) * samples
    return (6.0 * params(layers) - 2.0 * 784 * width_for_budget(layers)) * samples


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; cells are written as given (format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
