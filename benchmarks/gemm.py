"""Why bf16 barely pays at batch 64 on a CPU: the step's pieces timed alone, fp32 vs bf16, one thread.

    python benchmarks/gemm.py [--threads 1] [--repeats 5]

For the two layer shapes that bound the study (784 -> 1024, the widest; 289 -> 289, the narrowest), times
the forward GEMM (64, in) x (in, out), the weight-gradient GEMM (out, 64) x (64, in) in fp32 (with the SGD
update fused, as the fp32 step does) and in bf16 (bf16 output), the fp32 master update from a bf16
gradient, and the refresh of the bf16 weight copy; and the same pieces as softmaxlab emulates bf16 on a CPU
without bf16 matmul units (fp32 GEMMs on bf16 values, each rounding two copies through a bf16 scratch).
Median of interleaved repeats, microseconds. Then whole SGD steps of the L = 1 and L = 8 models in the three
precisions, beside the sum of the fp32 step's GEMMs timed alone. The machine line says which of the two bf16 paths
`softmaxlab --precision bf16` takes here (softmaxlab.mnist.engine.bf16_gemm).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table  # noqa: E402


def timeit(fn, n: int = 200) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def pieces(i: int, o: int, B: int = 64, lr: float = 0.01) -> dict:
    """The step's pieces for one layer (in i, out o), as callables; updates scaled down so W stays put."""
    W = torch.randn(o, i) * 0.01  # fp32 master, (out, in)
    Wc = W.bfloat16()  # its bf16 copy
    We = Wc.float()  # its emulated copy: bf16 values in fp32
    a, g = torch.randn(B, i), torch.randn(B, o)
    ab, gb = a.bfloat16(), g.bfloat16()
    z, zb = torch.empty(B, o), torch.empty(B, o, dtype=torch.bfloat16)
    dW, dWb = torch.empty(o, i), torch.empty(o, i, dtype=torch.bfloat16)
    scratch = torch.empty(o * i, dtype=torch.bfloat16)

    def rnd(t):  # what Engine._round does
        return t.copy_(scratch[:t.numel()].view(t.shape).copy_(t))

    return {
        "forward GEMM fp32": lambda: torch.mm(a, W.t(), out=z),
        "forward GEMM bf16": lambda: torch.mm(ab, Wc.t(), out=zb),
        "weight grad + update, fp32 (one fused GEMM)": lambda: W.addmm_(g.t(), a, alpha=-lr * 1e-6),
        "weight grad GEMM bf16": lambda: torch.mm(gb.t(), ab, out=dWb),
        "fp32 master += bf16 grad": lambda: W.add_(dWb, alpha=-lr * 1e-6),
        "bf16 copy of the master": lambda: Wc.copy_(W),
        "emulated: forward GEMM fp32 + output rounded": lambda: rnd(torch.mm(a, We.t(), out=z)),
        "emulated: weight grad GEMM fp32 + rounded": lambda: rnd(torch.mm(g.t(), a, out=dW)),
        "emulated: fp32 master += grad": lambda: W.add_(dW, alpha=-lr * 1e-6),
        "emulated: rounded copy of the master": lambda: rnd(We.copy_(W)),
    }


def gemms_alone(i: int, o: int, first: bool, repeats: int) -> float:
    """Microseconds of one layer's GEMMs in an fp32 step, each timed alone in a loop (its data hot in cache)."""
    W, b, a, g = torch.randn(o, i) * 0.01, torch.zeros(1, o), torch.rand(64, i), torch.randn(64, o)
    z, d = torch.empty(64, o), torch.empty(64, i)
    calls = [lambda: torch.addmm(b, a, W.t(), out=z), lambda: W.addmm_(g.t(), a, alpha=-1e-8)]
    if not first:  # layer 0 needs no input gradient
        calls.append(lambda: torch.mm(g, W, out=d))
    return sum(min(timeit(fn, 50) for _ in range(repeats)) for fn in calls)


def steps(layers: int, repeats: int) -> list[list[str]]:
    """One whole Engine.step (batch 64) of the equal-budget MLP with `layers` hidden layers: fp32, bf16 GEMMs,
    emulated bf16; beside the fp32 step, the same step's GEMMs each timed alone in a loop (their data hot in
    cache), whose sum is what the step would take if nothing but GEMM time counted."""
    from softmaxlab.mnist.configs import TrainConfig
    from softmaxlab.mnist.engine import Engine
    from softmaxlab.mnist.train import init_model

    model, k = init_model(TrainConfig(model="mlp", layers=layers))
    xb, yb = torch.randint(0, 256, (64, 784), dtype=torch.uint8), torch.randint(0, 10, (64,))
    loss = torch.empty(())
    engines = {"fp32": Engine(model, 0.01, False, False, "cpu"),
               "bf16 GEMMs": Engine(model, 0.01, True, False, "cpu", emulate_bf16=False),
               "bf16 emulated": Engine(model, 0.01, True, False, "cpu", emulate_bf16=True)}
    # the fp32 step's GEMMs: forward (+ bias), input gradient (not for layer 0), weight gradient + update
    alone = sum(gemms_alone(W.shape[1], W.shape[0], l == 0, repeats) for l, W in enumerate(engines["fp32"].W))
    torch.set_flush_denormal(True)  # as training does
    calls = {name: functools.partial(eng.step, xb, yb, loss) for name, eng in engines.items()}
    n = {name: max(3, min(100, int(0.3e6 / timeit(fn, 2)))) for name, fn in calls.items()}  # ~0.3 s a timing
    t = {name: [] for name in engines}
    for _ in range(repeats):  # interleaved
        for name, fn in calls.items():
            t[name].append(timeit(fn, n[name]))
    torch.set_flush_denormal(False)
    f32 = min(t["fp32"])
    label = f"L={layers} k={k}"
    rows = [[label, f"{name} step", f"{min(v) / 1e3:.2f}", f"{min(v) / f32:.2f}x"] for name, v in t.items()]
    rows.append([label, "the fp32 step's GEMMs, each timed alone, summed", f"{alone / 1e3:.2f}", f"{alone / f32:.2f}x"])
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    B = 64
    rows = []
    for i, o in [(784, 1024), (289, 289)]:
        cases = pieces(i, o, B)
        # a bf16 fallback kernel can take 10-50 ms a call: time each case for about 0.2 s, not 200 calls
        n = {k: max(5, min(200, int(0.2e6 / timeit(fn, 3)))) for k, fn in cases.items()}
        times = {k: [] for k in cases}
        for _ in range(args.repeats):  # interleaved, so a busy moment hurts every case alike
            for k, fn in cases.items():
                times[k].append(timeit(fn, n[k]))
        med = {k: statistics.median(v) for k, v in times.items()}
        flops = 2 * B * i * o
        for k, t in med.items():
            rows.append([f"{i} -> {o}", k, f"{t:.0f}", f"{flops / t / 1e3:.0f}" if "GEMM" in k else "-"])
        f32 = med["forward GEMM fp32"] + med["weight grad + update, fp32 (one fused GEMM)"]
        b16 = (med["forward GEMM bf16"] + med["weight grad GEMM bf16"] + med["fp32 master += bf16 grad"]
               + med["bf16 copy of the master"])
        emu = sum(t for k, t in med.items() if k.startswith("emulated"))
        rows.append([f"{i} -> {o}", "**forward + weight gradient + update: fp32 / bf16 / emulated bf16**",
                     f"{f32:.0f} / {b16:.0f} / {emu:.0f}", f"{f32 / b16:.2f}x / {f32 / emu:.2f}x"])
    print(f"machine: {machine()}; threads {args.threads}")
    print(f"command: python benchmarks/gemm.py --threads {args.threads} --repeats {args.repeats}\n")
    print(table(["layer", "piece", "us (median)", "GFLOP/s (GEMMs) / speed-up over fp32"], rows))
    print("\nWhole steps (batch 64), best of the repeats:\n")
    print(table(["model", "step", "ms", "vs the fp32 step"], steps(1, args.repeats) + steps(8, args.repeats)))


if __name__ == "__main__":
    main()
