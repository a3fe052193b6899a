"""Run a sweep's configs as Ray tasks while this process keeps the run records, as the local executor does.

Each (model, L, seed) is one Ray task. The worker gets the config, the data (put into Ray's object store once)
and the run's checkpoint if an interrupted run left one; it trains and returns train()'s result, its final
checkpoint and the worker's machine. This process (the driver) takes the run's lock before it submits the
task and holds it until the records are written, with the same functions as the local executor
(records.claim, begin_record, write_metrics, finish_record): config.json first, result.json last, so a sweep
resumes, and shares an --out with other processes, the same way whichever executor ran it.

Runs in flight when a Ray sweep is interrupted restart from their last checkpoint on disk (if any), not from
their last epoch: checkpoints come back with the result. At most as many runs are in flight (and locked) as
the cluster has CPUs per task, so other processes on the same --out can take the rest.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import SoftmaxlabError
from ..mnist import records
from ..mnist.configs import TrainConfig
from ..mnist.data import Data
from ..mnist.train import train


def require_ray():
    try:
        import ray
    except ImportError:
        raise SoftmaxlabError("--executor ray needs Ray: pip install 'softmaxlab[ray]' (or use --executor local)"
                              ) from None
    return ray


def connect(address: str | None = None) -> bool:
    """Connect this process to Ray; True if we connected (and so must disconnect), False if already connected.

    address: None ($RAY_ADDRESS if set, else a new local instance), 'local' (a new local instance), 'auto'
    (the cluster started on this machine by `ray start`), 'host:6379', or 'ray://host:10001' (Ray Client).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    remote = address != "local" and (address is not None or os.environ.get("RAY_ADDRESS"))
    kw = dict(include_dashboard=False) if not remote else {}
    if remote:
        # workers on other machines run this process's softmaxlab (they need torch and numpy installed)
        kw["runtime_env"] = {"py_modules": [str(Path(__file__).resolve().parent.parent)]}
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # ConnectionError, ValueError, RuntimeError: all mean "no cluster there"
        where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        raise SoftmaxlabError(f"cannot start Ray at {where} ({type(e).__name__}: {' '.join(str(e).split())[:160]})"
                              f": check --address / $RAY_ADDRESS, or pass --address local") from None
    return True


def _train_task(cfg: TrainConfig, data: Data, checkpoint: bytes | None) -> dict:
    """On a worker: train one run (resuming from `checkpoint`), return what the driver records."""
    if cfg.threads is None:
        torch.set_num_threads(1)  # the task holds one CPU of the cluster
    with tempfile.TemporaryDirectory(prefix="softmaxlab-") as tmp:
        ck = Path(tmp) / "checkpoint.pt"
        if checkpoint is not None:
            ck.write_bytes(checkpoint)
        t0 = time.perf_counter()
        res = train(cfg, data, checkpoint=ck)
        wall = time.perf_counter() - t0
        prov = records.provenance()
        return dict(result=res, wall_time_s=wall, checkpoint=ck.read_bytes() if ck.exists() else None,
                    machine=prov["machine"], versions=prov["versions"])


def _resources(cfg: TrainConfig) -> dict:
    return dict(num_cpus=cfg.threads or 1, num_gpus=1 if cfg.device == "cuda" else 0)


def shortfall(need: dict, have: dict) -> list[str]:
    """What one task needs (num_cpus, num_gpus) that the cluster's resources (ray.cluster_resources()) lack."""
    short = []
    if need["num_gpus"] and have.get("GPU", 0) < need["num_gpus"]:
        short.append("--device cuda asks each Ray task for a GPU and the Ray cluster has none now")
    if need["num_cpus"] > have.get("CPU", 0):
        short.append(f"each Ray task asks for {need['num_cpus']} CPU(s) (--threads) and the Ray cluster has "
                     f"{have.get('CPU', 0):g} now")
    return short


def execute_ray(cfgs: list[TrainConfig], out: str | Path, data: Data, address: str | None = None,
                progress: bool | None = None, log=print, tracker=None) -> list[dict]:
    """runner.execute on Ray: every config not yet done under `out` trained as a Ray task; all results in plan
    order. Connects to Ray (see `connect`) unless this process already is, and disconnects if it connected."""
    ray = require_ray()
    out = records.ensure_dir(out)
    (out / "runs").mkdir(exist_ok=True)
    records.remove_stale_temps(out)
    if progress is None:
        progress = sys.stderr.isatty()
    ids = [records.run_id(c.identity()) for c in cfgs]
    results: dict[str, dict] = {}
    pending = list({rid: cfg for cfg, rid in zip(cfgs, ids)}.items())  # (run id, config), plan order
    inflight: dict = {}  # ObjectRef -> (cfg, rid, run folder, lock's ExitStack, epochs already logged)
    failures: list[str] = []
    bar = None
    if progress:
        bar = tqdm(total=len(pending), desc="runs", unit="run", dynamic_ncols=True)
        log = bar.write
    started = connect(address)
    try:
        task = ray.remote(_train_task)
        data_ref = None
        have = ray.cluster_resources()
        need = _resources(cfgs[0]) if cfgs else dict(num_cpus=1, num_gpus=0)
        # a task asking for more than the cluster has waits until an autoscaler adds nodes; a local instance has
        # none, so there it would wait forever: say so instead
        short = shortfall(need, have)
        if short and started and (address == "local" or not (address or os.environ.get("RAY_ADDRESS"))):
            raise SoftmaxlabError(f"{'; '.join(short)}: pass --device cpu or fewer --threads, or use a cluster "
                                  f"that has them (--address)")
        for s in short:
            log(f"warning: {s}; the tasks wait until the cluster grows (Ctrl-C to stop)")
        slots = max(1, int(have.get("CPU", 0) // need["num_cpus"]))

        def done(rid, res):
            results[rid] = res
            if bar is not None:
                bar.update(1)

        def claim(rid: str, cfg: TrainConfig, wait: bool) -> bool:
            """Record a finished run or submit its task under its lock; False if another process holds it."""
            nonlocal data_ref
            lock = contextlib.ExitStack()
            try:
                c = lock.enter_context(records.claim(out, rid, wait))
                if c.held or c.result is not None:
                    lock.close()
                    if c.result is not None:
                        done(rid, c.result)
                    return not c.held
                d = c.folder
                history = records.begin_record(cfg, rid, d, tracker)
                if data_ref is None:
                    data_ref = ray.put(data)
                ck = d / "checkpoint.pt"
                ref = task.options(**_resources(cfg)).remote(cfg, data_ref, ck.read_bytes() if history else None)
            except BaseException:
                lock.close()
                raise
            inflight[ref] = (cfg, rid, d, lock, len(history))
            return True

        def collect(ref) -> None:
            cfg, rid, d, lock, logged = inflight.pop(ref)
            with lock:
                try:
                    got = ray.get(ref)
                except ray.exceptions.RayError as e:
                    cause = getattr(e, "cause", None) or e
                    msg = " ".join(str(cause).split())[:200]
                    failures.append(f"{rid} (model={cfg.model} layers={cfg.layers} seed={cfg.seed}): "
                                    f"{type(cause).__name__}: {msg}")
                    log(f"FAILED on a Ray worker: {failures[-1]}")
                    return
                if got["checkpoint"] is not None:
                    records.atomic_write(d / "checkpoint.pt", got["checkpoint"])
                res = got["result"]
                records.write_metrics(d, res["history"])
                if tracker is not None:
                    for rec in res["history"][logged:]:
                        tracker.log_epoch(rid, rec)
                prov = dict(records.provenance(), machine=got["machine"], versions=got["versions"])
                done(rid, records.finish_record(cfg, rid, d, res, got["wall_time_s"], log, tracker, prov))

        while pending or inflight:
            for item in list(pending):
                if len(inflight) >= slots:
                    break
                if claim(*item, wait=False):
                    pending.remove(item)
            if inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    collect(ref)
            elif pending:  # every run left is held by another process: wait for one, as the local executor does
                claim(*pending.pop(0), wait=True)
    finally:
        for ref, (*_, lock, _logged) in inflight.items():  # interrupted: stop the workers, free the locks
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
            lock.close()
        if bar is not None:
            bar.close()
        if started:
            ray.shutdown()
    if failures:
        raise SoftmaxlabError(f"{len(failures)} run(s) failed on Ray workers, first {failures[0]}; fix that and "
                              f"re-run the same command (finished runs are kept)")
    return [results[rid] for rid in ids]
