"""Train a plan's runs on several local processes at once: study.execute with workers > 1.

On a small CPU the study's GEMMs are small (batch 64), and one process with two OpenMP threads spends much
of each step synchronising them; two processes with one thread each, on different runs, keep both cores
busy (benchmarks/README.md has the numbers). Nothing new coordinates them: every process walks the same
plan and trains the runs whose lock it gets (runs.try_lock), exactly as two sweeps started by hand on one
--out do (docs/reliability.md). A run's numbers do not depend on which process trained it: every process
uses the same thread count, and the thread count, not the process, is what can change a GEMM's rounding.

Helper processes are started with `spawn` (forking a process whose OpenMP pool exists can hang), die with
their parent (PR_SET_PDEATHSIG), never print a traceback: if one fails, the parent trains what it left.
stop() ends them with SIGTERM, which kills them outright (no handler): like any kill, it loses at most
the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from .train import Data, TrainConfig


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve(workers: int | None, cfgs: list[TrainConfig], tracker=None) -> int:
    """How many processes to train on: None = one per core on the CPU, 1 on CUDA or with a tracker.

    A tracker holds one live connection (an MLflow run, a TensorBoard writer) per run in this process, so a
    tracked study trains here only.
    """
    if workers is not None:
        return max(1, min(workers, len(cfgs)))
    from .train import resolve_device

    if tracker is not None or not cfgs or any(resolve_device(c.device).type != "cpu" for c in cfgs):
        return 1
    return max(1, min(cpu_count(), len(cfgs)))


def per_worker(cfgs: list[TrainConfig], workers: int) -> list[TrainConfig]:
    """The same runs with each process's share of the cores as torch threads (not part of a run's identity)."""
    threads = max(1, cpu_count() // workers)
    return [c if c.threads is not None else dataclasses.replace(c, threads=threads) for c in cfgs]


def longest_first(cfgs: list[TrainConfig]) -> list[TrainConfig]:
    """Deeper nets take longer per epoch at equal parameters (more, smaller GEMMs): start them first, so the
    processes finish together (longest-processing-time-first scheduling)."""
    return sorted(cfgs, key=lambda c: -(c.epochs * (c.layers + 1 if c.model == "mlp" else 0.2)))


def start(n: int, cfgs: list[TrainConfig], out: Path, data: Data, batch_seeds: bool, echo: bool) -> list:
    """Start n helper processes that each run study.execute on the same plan; return them."""
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for _ in range(n):
        p = ctx.Process(target=_helper, args=(cfgs, str(out), data, batch_seeds, echo, os.getpid()), daemon=True)
        p.start()
        procs.append(p)
    return procs


def join(procs: list) -> None:
    for p in procs:
        p.join()


def stop(procs: list) -> None:
    """Stop helpers that are still running (the parent is leaving early: an error or Ctrl-C)."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join()


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies (a kill -9 of the CLI included). SIGKILL,
    not a handler: a helper must not live on to take a dead parent's run lock; every write is atomic, so a
    kill at any moment loses at most the epoch in progress."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above: nobody to work for
        os._exit(1)


def _helper(cfgs, out, data, batch_seeds, echo, parent) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    from .study import execute

    log = (lambda s: print(s, flush=True)) if echo else (lambda s: None)
    try:
        execute(cfgs, out, data, progress=False, log=log, batch_seeds=batch_seeds, workers=1, _helper=True)
    except BaseException:  # noqa: BLE001 -- whatever it was, the parent trains the runs we leave
        os._exit(1)
