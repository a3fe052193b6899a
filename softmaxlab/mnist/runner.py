"""The local executor: train a plan's runs under --out, in this process and, with workers > 1, in helpers.

On a small CPU the study's GEMMs are small (batch 64), and one process with two OpenMP threads spends much
of each step synchronising them; two processes with one thread each, on different runs, keep both cores
busy (benchmarks/README.md has the numbers). Nothing new coordinates them: every process walks the same
plan and trains the runs whose lock it gets (records.claim), exactly as two sweeps started by hand on one
--out do (docs/reliability.md). A run's numbers do not depend on which process trained it: every process
uses the same thread count, and the thread count, not the process, is what can change a GEMM's rounding.

Helper processes are started with `spawn` (forking a process whose OpenMP pool exists can hang), die with
their parent (PR_SET_PDEATHSIG), never print a traceback: if one fails, the parent trains what it left.
Stopping them is SIGTERM, which kills them outright (no handler): like any kill, it loses at most the epoch
in progress.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from . import records
from .configs import TrainConfig
from .data import Data
from .engine import resolve_device
from .train import train


def say(line: str) -> None:
    """Print a line in one write, flushed. print() writes the text, then the newline: where stdout is
    unbuffered (PYTHONUNBUFFERED, common in CI and containers) those are two writes, and a helper's line
    printed between them runs on after ours. One write under PIPE_BUF (4 KiB) lands whole on a pipe."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def execute(cfgs: list[TrainConfig], out: str | Path, data: Data, progress: bool | None = None,
            log=say, tracker=None, workers: int | None = 1, _helper: bool = False) -> list[dict]:
    """Run every config not yet done under `out`; return all their results (in plan order).

    Another process working on the same --out holds a run's lock: we skip it, do the rest, then wait for it.
    workers: processes that train at once, each with its share of the cores as threads; None: one per core
    on the CPU (1 on CUDA or with a tracker: a tracker holds one live connection per run, in this process).
    """
    out = records.ensure_dir(out)
    (out / "runs").mkdir(exist_ok=True)
    if not _helper:
        records.remove_stale_temps(out)  # left by a killed sweep; run folders are cleaned under their lock
    progress = sys.stderr.isatty() if progress is None else progress
    ids = [records.run_id(c.identity()) for c in cfgs]
    n = resolve(workers, cfgs, tracker)
    log = say if log is print else log  # helpers print to our stdout too (see say)
    order = list(zip(cfgs, ids))
    helpers = []
    if n > 1:
        cfgs = longest_first(per_worker(cfgs, n))
        order = [(c, records.run_id(c.identity())) for c in cfgs]
        todo = [c for c, rid in order if not (out / "runs" / rid / "result.json").exists()]
        if len(todo) > 1:
            helpers = _start(min(n, len(todo)) - 1, cfgs, out, data, echo=log is say)
    try:
        results = _execute(order, out, data, progress, log, tracker, helpers, _helper)
    finally:
        _stop(helpers)
    if _helper:  # a helper returns the runs it finished; the others are its parent's to collect
        return [results[rid] for rid in ids if rid in results]
    return [results[rid] for rid in ids]


def _execute(order, out, data, progress, log, tracker, helpers, helper_only) -> dict[str, dict]:
    results: dict[str, dict] = {}
    bar = tqdm(total=len(order), desc="runs", unit="run", dynamic_ncols=True, disable=not progress)
    log = bar.write if progress else log
    for wait in (False,) if helper_only else (False, True):  # a helper leaves the runs others hold to them
        if wait:
            for p in helpers:  # their runs are done (or, if one failed, unlocked for us to train)
                p.join()
        for cfg, rid in order:
            if rid in results:
                continue
            res = run_one(cfg, out, data, wait=wait, progress=progress, log=log, tracker=tracker)
            if res is not None:
                results[rid] = res
                bar.update(1)
    bar.close()
    return results


def run_one(cfg: TrainConfig, out: Path, data: Data, wait: bool = False, progress: bool = False,
            log=print, tracker=None) -> dict | None:
    """Train one run unless its result exists; None if another process holds it (and wait is False)."""
    rid = records.run_id(cfg.identity())
    with records.claim(out, rid, wait) as c:
        if c.held or c.result is not None:
            return c.result
        history = records.begin_record(cfg, rid, c.folder, tracker)
        t0 = time.perf_counter()

        def on_epoch(rec):
            history.append(rec)
            records.write_metrics(c.folder, history)
            if tracker is not None:
                tracker.log_epoch(rid, rec)

        res = train(cfg, data, checkpoint=c.folder / "checkpoint.pt", on_epoch=on_epoch, progress=progress)
        return records.finish_record(cfg, rid, c.folder, res, time.perf_counter() - t0, log, tracker)


# ---- helper processes ---------------------------------------------------------------------------------------


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve(workers: int | None, cfgs: list[TrainConfig], tracker=None) -> int:
    """How many processes to train on: None = one per core on the CPU, 1 on CUDA or with a tracker."""
    if workers is not None:
        return max(1, min(workers, len(cfgs)))
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


def _start(n: int, cfgs: list[TrainConfig], out: Path, data: Data, echo: bool) -> list:
    """Start n helper processes that each run execute() on the same plan; return them."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_helper, args=(cfgs, str(out), data, echo, os.getpid()), daemon=True)
             for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def _stop(procs: list) -> None:
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
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if os.getppid() != parent:  # the parent died before the line above: nobody to work for
        os._exit(1)


def _helper(cfgs, out, data, echo, parent) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    # tqdm's default lock is a multiprocessing semaphore, which SIGTERM would leak (the resource tracker then
    # warns on the parent's stderr after Ctrl-C); a helper draws no bars, so a thread lock does
    tqdm.set_lock(threading.RLock())
    log = say if echo else (lambda s: None)
    try:
        execute(cfgs, out, data, progress=False, log=log, workers=1, _helper=True)
    except BaseException:  # noqa: BLE001 -- whatever it was, the parent trains the runs we leave
        os._exit(1)
