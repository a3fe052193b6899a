"""One training run under the assignment's protocol: SGD, batch 64, lr 0.01, 5 epochs, in-memory tensors.

The loop is nanoGPT-plain: data lives on the device as uint8, each epoch is one randperm from a seeded
generator, batches are slices, and engine.py's hand-written step trains on them. A run checkpoints after
every epoch (records.save_checkpoint, a plain dict) and resumes bit-for-bit on the CPU.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
from tqdm import tqdm

from ..errors import SoftmaxlabError
from .configs import TrainConfig
from .data import Data, to_float
from .diagnostics import PROBE, Recorder
from .engine import Engine, _capture, _no_denormals, resolve_device
from .models import build, param_count
from .records import load_checkpoint, save_checkpoint

CHECK_EVERY = 32  # CPU steps between finiteness checks: a diverged run stops within this many steps


def init_model(cfg: TrainConfig):
    """The model and its hidden width, seeded (init_seed, else seed), independent of the global RNG's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seeds()[0])
        return build(cfg.model, cfg.layers, cfg.width, cfg.init, cfg.budget)


def train(cfg: TrainConfig, data: Data, checkpoint: str | os.PathLike | None = None,
          on_epoch: Callable[[dict], None] | None = None, progress: bool = False, keep_model: bool = False) -> dict:
    """Train one model; return its metrics. With `checkpoint`, resume from it and save to it every epoch.

    A non-finite loss stops the run and returns status 'diverged' with the epoch and step where it happened.
    cfg.threads holds while it trains; the caller's thread count is restored after.
    """
    threads = torch.get_num_threads()
    try:
        return _train(cfg.validate(), data, checkpoint, on_epoch, progress, keep_model)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, data, checkpoint, on_epoch, progress, keep_model) -> dict:
    # setup: the seeded model, or the checkpoint's weights, shuffle state and history
    to_float(data.train.x[:1], cfg.normalize)  # uint8 pixels or a clear error, before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    model, width = init_model(cfg)
    rng = shuffle_rng(cfg)
    history, start, train_time, points = [], 0, 0.0, []
    if checkpoint is not None and os.path.exists(checkpoint):
        ck = load_checkpoint(checkpoint)
        try:
            model.load_state_dict(ck["model"])
        except (RuntimeError, KeyError) as e:
            raise SoftmaxlabError(f"checkpoint {checkpoint} does not fit this run's model "
                                  f"({' '.join(str(e).split())[:100]}): delete it to restart that run") from None
        rng.set_state(ck["shuffle_rng"])
        history, start, train_time = list(ck["history"]), ck["epoch"], ck["train_time_s"]
        points = list(ck["diagnostics"]) if cfg.diagnostics else []
    train_split = data.train.head(cfg.train_subset).to(dev)
    val_split, test_split = data.val.head(cfg.eval_subset).to(dev), data.test.head(cfg.eval_subset).to(dev)
    n, bs = len(train_split.y), cfg.batch_size
    steps, full = math.ceil(n / bs), n // bs
    eng = Engine(model, cfg.lr, cfg.precision == "bf16", cfg.normalize, dev)
    xs = torch.empty((n, train_split.x.shape[1]), dtype=torch.uint8, device=dev)  # this epoch's order
    ys = torch.empty(n, dtype=torch.long, device=dev)
    losses = torch.empty(steps, device=dev)  # per step, filled without a host sync
    bar = tqdm(total=cfg.epochs * steps, initial=start * steps, unit="step", leave=False, dynamic_ncols=True,
               desc="linear" if cfg.model == "linear" else f"mlp L={cfg.layers} k={width}", disable=not progress)
    graph, graph_error, diverged = None, None, None
    diag = Recorder(to_float(val_split.x[:PROBE], cfg.normalize), eng.n, points) if cfg.diagnostics else None

    with _no_denormals(dev):
        for epoch in range(start, cfg.epochs):
            # shuffle: one gather per epoch, then the batches are slices
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=rng).to(dev)
            torch.index_select(train_split.x, 0, perm, out=xs)
            torch.index_select(train_split.y, 0, perm, out=ys)
            # train: CUDA replays one captured step per full batch; elsewhere the step runs eagerly, with a
            # finiteness check every CHECK_EVERY steps (on the CPU a check is not a sync) and, with --diagnostics,
            # a diagnostics point every DIAG_EVERY steps (diagnostics.py)
            if graph is None and graph_error is None and full > 0 and _use_graph(dev, cfg):
                graph, graph_error = _capture(eng, xs, ys, losses, bs)
            done = steps
            if graph is not None:
                graph.start_epoch()
                for _ in range(full):
                    graph.replay()
                if full < steps:
                    eng.step(xs[full * bs:], ys[full * bs:], losses[full])
                bar.update(steps)
            else:
                for s in range(steps):
                    norms = diag.due(s, steps) if diag is not None else None  # a diagnostics point: the buffer
                    eng.step(xs[s * bs:(s + 1) * bs], ys[s * bs:(s + 1) * bs], losses[s], norms)
                    if norms is not None:
                        diag.record(eng, epoch, s, steps, losses)
                    bar.update(1)
                    if dev.type == "cpu" and (s + 1) % CHECK_EVERY == 0 and not torch.isfinite(losses[:s + 1]).all():
                        done = s + 1
                        break
            finite = torch.isfinite(losses[:done]).cpu()
            elapsed = time.perf_counter() - t0
            train_time += elapsed
            if not bool(finite.all()):  # diverged: record where, keep nothing of this epoch
                diverged = dict(epoch=epoch + 1, step=int((~finite).nonzero()[0]) + 1)
                break
            # evaluate and record: validation metrics, the checkpoint, the caller's callback
            t_eval = time.perf_counter()
            val = eng.evaluate(val_split)
            rec = dict(epoch=epoch + 1, train_loss=losses[:done].double().mean().item(), val_loss=val["loss"],
                       val_acc=val["acc"], epoch_time_s=elapsed + time.perf_counter() - t_eval)
            history.append(rec)
            if checkpoint is not None:
                save_checkpoint(checkpoint, dict(epoch=epoch + 1, model=eng.state_dict(model),
                                                 shuffle_rng=rng.get_state(), history=history,
                                                 train_time_s=train_time,
                                                 **({"diagnostics": diag.points} if diag is not None else {})))
            if on_epoch is not None:
                on_epoch(rec)
    bar.close()

    # result: the test metrics and the misclassified test digits (for the report), or where it diverged
    out = {}
    if keep_model:
        eng.write_back(model)
        out["model"] = model.to(dev)
    out.update(status="ok", width=width, params=param_count(model), epochs_done=len(history), history=history,
               train_time_s=train_time, device=str(dev), threads=torch.get_num_threads())
    if dev.type == "cuda":
        out.update(cuda_graph=graph is not None, **({"cuda_graph_error": graph_error} if graph_error else {}))
    if diag is not None:
        out["diagnostics"] = diag.points
    if any(eng.low):
        out["bf16_gemm"] = "emulated" if eng.emulate else "native"
    if diverged is not None:
        return dict(out, status="diverged", diverged_at=diverged)
    test = eng.evaluate(test_split)
    wrong = (test["pred"] != test_split.y.cpu()).nonzero().flatten()
    return dict(out, test_acc=test["acc"], test_loss=test["loss"], val_acc=history[-1]["val_acc"],
                val_loss=history[-1]["val_loss"], test_errors=[[int(j), int(test["pred"][j])] for j in wrong])


def shuffle_rng(cfg: TrainConfig) -> torch.Generator:
    """The per-epoch shuffle's generator (data_seed, else seed); on the CPU, so the order is the same on every
    device."""
    return torch.Generator().manual_seed(cfg.seeds()[1])


def _use_graph(dev: torch.device, cfg: TrainConfig) -> bool:
    return dev.type == "cuda" and cfg.cuda_graph and not cfg.diagnostics  # diagnostics: points between steps
