"""Where one step of SampledSoftmaxLoss spends its time, op by op (torch.profiler, self CPU time per step), for
the default (dense .grad through the module's reused buffer) and sparse=True, and what the default adds.

    python benchmarks/sampled_profile.py                         # C=1e4, d=128, B=256, K=256
    python benchmarks/sampled_profile.py --shape 1e6,512,2048,256 --top 12

The profiler adds its own overhead per op, so totals run above benchmarks/sampled.py's medians; the split is
what this is for (benchmarks/README.md cites it for the grid cells below TensorFlow's speed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from softmaxlab.sampled import SampledSoftmaxLoss  # noqa: E402


def per_op(C: int, d: int, B: int, K: int, sparse: bool, steps: int) -> tuple[float, dict[str, tuple[float, float]]]:
    """(median wall ms per step unprofiled, {op: (self us per step, calls per step)})."""
    torch.manual_seed(0)
    head = SampledSoftmaxLoss(C, d, K, sparse=sparse)
    x, y = torch.randn(B, d, requires_grad=True), torch.randint(0, C, (B,))
    g = torch.Generator().manual_seed(1)

    def step():
        head.zero_grad()
        x.grad = None
        head(x, y, generator=g).backward()

    for _ in range(10):
        step()
    wall = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        wall.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = {e.key: (e.self_cpu_time_total / steps, e.count / steps) for e in prof.key_averages()}
    return 1e3 * statistics.median(wall), ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1e4,128,256,256", help="C,d,B,K")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args(argv)
    C, d, B, K = (int(float(v)) for v in a.shape.split(","))
    print(f"C={C} d={d} B={B} K={K}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    res = {sp: per_op(C, d, B, K, sp, a.steps) for sp in (False, True)}
    for sp, (wall, ops) in res.items():
        total = sum(t for t, _ in ops.values())
        print(f"\n{'sparse=True' if sp else 'default'}: {wall:.2f} ms per step unprofiled; "
              f"{total / 1e3:.2f} ms of op self time, {sum(c for _, c in ops.values()):.0f} ops per step")
        for k, (t, c) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:a.top]:
            print(f"  {k[:48]:48s} {t:8.1f} us  x{c:.0f}")
    dense, sp = res[False][1], res[True][1]
    extra = {k: dense.get(k, (0, 0))[0] - sp.get(k, (0, 0))[0] for k in set(dense) | set(sp)}
    print(f"\nwhat the default adds ({res[False][0] - res[True][0]:+.2f} ms per step unprofiled), largest ops:")
    for k, t in sorted(extra.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  {k[:48]:48s} {t:+8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
