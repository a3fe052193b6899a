"""Cold vs warm MNIST load time: python benchmarks/data_load.py [DATA_DIR] (default: $SOFTMAXLAB_DATA).

cold  = the first load_mnist: read the .gz, gunzip, sha256 the payload, parse, write the decoded .npy cache.
warm  = later loads: np.load of the four cached arrays (no decoding, no hashing).
The cache goes to a fresh temp dir ($SOFTMAXLAB_CACHE), so the data dir is never written; the OS page cache
is warm for the source files in both cases.
"""

import os
import platform
import statistics
import sys
import tempfile
import time

import torch

from softmaxlab.mnist.data import load_mnist, resolve_data_dir


def timed(**kw) -> float:
    t0 = time.perf_counter()
    load_mnist(**kw)
    return time.perf_counter() - t0


def main() -> None:
    data_dir = resolve_data_dir(sys.argv[1] if len(sys.argv) > 1 else None)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SOFTMAXLAB_CACHE"] = cache
        kw = dict(data_dir=data_dir, download=False)
        nocache = [timed(**kw, cache=False) for _ in range(3)]
        cold = timed(**kw)
        warm = [timed(**kw) for _ in range(5)]
    rows = [
        ("cold, first load (gunzip + sha256 + parse + write cache)", cold),
        ("no cache (gunzip + sha256 + parse), median of 3", statistics.median(nocache)),
        ("warm, from the .npy cache, median of 5", statistics.median(warm)),
    ]
    print(f"MNIST load, data dir {data_dir}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    print("command: python benchmarks/data_load.py\n")
    print("| load | seconds | vs warm |")
    print("|---|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {t / rows[-1][1]:.0f}x |")


if __name__ == "__main__":
    main()
