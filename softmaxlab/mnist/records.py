"""Run records, pure I/O: the folder layout, the one atomic writer, the claim (lock), begin/metrics/finish.

    <out>/runs/<run_id>/config.json     the resolved config (identity fields + execution fields)
    <out>/runs/<run_id>/metrics.jsonl   one line per finished epoch
    <out>/runs/<run_id>/checkpoint.pt   the state after the last finished epoch (resume), a plain dict
    <out>/runs/<run_id>/result.json     written last: its presence means the run is done
    <out>/runs/<run_id>/lock            an fcntl lock held while a process trains the run

Every executor (runner.py's local processes, extras/ray.py) keeps its records with these functions. A sweep
skips runs whose result.json exists, so re-running resumes; the lock keeps two processes on the same --out
from training the same run, and the kernel drops it when its holder dies (no stale locks). This module
imports nothing of the study above it: configs come in duck-typed (identity(), asdict).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import functools
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

from .. import __version__
from ..errors import SoftmaxlabError


def run_id(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_name(model: str, layers: int, width: int) -> str:
    return "linear" if model == "linear" else f"mlp-L{layers}-k{width}"


# ---- the one atomic writer ------------------------------------------------------------------------------


RESUME = "free some space or pick a writable --out, then re-run to resume"


def atomic_write(path: str | os.PathLike, data: str | bytes, exclusive: bool = False, fix: str = RESUME) -> bool:
    """Temp file in the same folder, fsync, rename: readers see the old file or the new one, never half.

    exclusive: only create `path` (a hard link, atomic too); False, nothing written, if it exists already.
    fix: the error message's advice when the write fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    blob = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: plain replace, losing only the exclusivity
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SoftmaxlabError(f"cannot write {path}: {e.strerror or e}; {fix}") from None


def write_json(path, obj, exclusive: bool = False) -> bool:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n", exclusive)


def read_json(path):
    """A file that is not valid JSON is treated as absent (it cannot be ours: we only write atomically)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _jsonable(o):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def ensure_dir(path: str | os.PathLike) -> Path:
    if not str(path).strip():  # Path('') is '.': an unset variable in `--out "$DIR"` would write here
        raise SoftmaxlabError("--out is empty: pass a folder for the records, or drop --out")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SoftmaxlabError(f"output folder {path} is not writable ({e.strerror or e}): pass a writable "
                              f"--out") from None
    return path


_TEMP = re.compile(r"(?:\.tmp|^\.write-probe)(\d+)$")  # atomic_write's and ensure_dir's temp names


def remove_stale_temps(folder: Path) -> int:
    """Delete the temp files that killed writers left in `folder` (a live writer's are kept); return how many."""
    n = 0
    with contextlib.suppress(OSError), os.scandir(folder) as it:
        for e in it:
            m = _TEMP.search(e.name)
            if m is None or not e.is_file(follow_symlinks=False) or _alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                n += 1
    return n


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process, or not a pid at all: leave it
        return True
    try:  # a killed writer nobody has reaped yet (a helper orphaned in a container whose pid 1 reaps nothing)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):  # no /proc (not Linux): it answered signal 0, so count it as alive
        return True


# ---- checkpoints: a plain dict of tensors and plain types (weights_only loads it) ------------------------


def save_checkpoint(path, ck: dict) -> None:
    """ck: epoch, model (state_dict), optimizer (SGD's state_dict), shuffle_rng, history, train_time_s."""
    buf = io.BytesIO()
    torch.save(ck, buf)
    atomic_write(path, buf.getvalue())


def load_checkpoint(path) -> dict:
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(ck, dict) or not {"epoch", "model", "shuffle_rng", "history", "train_time_s"} <= set(ck):
            raise ValueError("not a softmaxlab checkpoint")
        return ck
    except Exception as e:  # a checkpoint we cannot read is not a result: say so, do not guess
        raise SoftmaxlabError(f"checkpoint {path} is unreadable ({type(e).__name__}): delete it to restart "
                              f"that run") from None


# ---- claim, begin, metrics, finish ----------------------------------------------------------------------


@contextlib.contextmanager
def try_lock(path: Path, wait: bool = False):
    """Yield True if this process now holds the lock file's fcntl lock, False if another process does."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing drops the lock


@dataclass(frozen=True)
class Claim:
    """What claim() found: the run's folder, its result if done, or held=True if another process trains it.
    Neither: this process holds the run's lock (until the with block ends) and must train it."""

    folder: Path
    result: dict | None = None
    held: bool = False


@contextlib.contextmanager
def claim(out: Path, rid: str, wait: bool = False):
    d = Path(out) / "runs" / rid
    done = read_json(d / "result.json")
    if done is not None:
        yield Claim(d, done)
        return
    d.mkdir(parents=True, exist_ok=True)
    with try_lock(d / "lock", wait=wait) as got:
        if not got:
            yield Claim(d, held=True)
            return
        done = read_json(d / "result.json")  # finished by the other process while we waited
        if done is None:
            remove_stale_temps(d)  # we hold the lock: any temp file here is a killed holder's
        yield Claim(d, done)


def begin_record(cfg, rid: str, d: Path, tracker=None) -> list[dict]:
    """Write config.json, tell the tracker; return the history a checkpoint holds (resume), else []."""
    ident = cfg.identity()
    write_json(d / "config.json", dict(run_id=rid, config=dataclasses.asdict(cfg), identity=ident))
    if tracker is not None:
        tracker.start_run(rid, run_name(cfg.model, cfg.layers, ident["width"]), ident)
    ck = d / "checkpoint.pt"
    history = list(load_checkpoint(ck)["history"]) if ck.exists() else []
    if history:  # a kill between the checkpoint and metrics.jsonl left it an epoch short: the checkpoint wins
        write_metrics(d, history)
    return history


def write_metrics(d: Path, history: list[dict]) -> None:
    atomic_write(d / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def finish_record(cfg, rid: str, d: Path, res: dict, wall_time_s: float, log=print, tracker=None,
                  prov: dict | None = None) -> dict:
    """Write result.json (last: it marks the run done) from train()'s output, tell the tracker, log a line."""
    name = run_name(cfg.model, cfg.layers, res["width"])
    result = dict(run_id=rid, name=name, model=cfg.model, layers=cfg.layers if cfg.model == "mlp" else 0,
                  seed=cfg.seed, precision=cfg.precision, config=dataclasses.asdict(cfg),
                  wall_time_s=wall_time_s, **res, **(prov or provenance()))
    write_json(d / "result.json", result)
    if tracker is not None:
        tracker.end_run(rid, result)
    label = " ".join([name, f"seed={cfg.seed}", *_set_apart(cfg)])
    if result["status"] == "ok":
        log(f"done {label}: {outcome(result)}")
    else:
        at = result["diverged_at"]
        log(f"DIVERGED {label} at epoch {at['epoch']} step {at['step']}: recorded, going on")
    return result


def _set_apart(cfg) -> list[str]:
    """The fields off their defaults that tell a run from another of the same name and seed (a diagnostic run,
    a swap-grid cell, an lr of the extension): without them the log seemed to train one run twice."""
    default = {f.name: f.default for f in dataclasses.fields(cfg)}
    return [f"{k}={getattr(cfg, k)}" for k in CONFIG_COLUMNS if k in default and getattr(cfg, k) != default[k]]


def outcome(r: dict) -> str:
    """How a run ended, in one line: its test metrics, or where it diverged."""
    if r["status"] != "ok":
        return f"DIVERGED at epoch {r['diverged_at']['epoch']} step {r['diverged_at']['step']} (non-finite loss)"
    return (f"test_acc={r['test_acc']:.4f} val_acc={r['val_acc']:.4f} test_loss={r['test_loss']:.4f} "
            f"params={r['params']:,} ({r['train_time_s']:.1f}s train, {r['device']})")


# ---- provenance -----------------------------------------------------------------------------------------


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    git = lambda *args: subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)
    try:
        rev = git("rev-parse", "HEAD")
        if rev.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: `python -m softmaxlab ...` (argv[0] .../softmaxlab/__main__.py) reads softmaxlab ..."""
    argv = sys.argv if argv is None else argv
    name = Path(argv[0]).name
    return " ".join(["softmaxlab" if name == "__main__.py" else name] + argv[1:])


@functools.cache
def provenance() -> dict:
    """Versions, commit and machine; computed once per process."""
    return dict(
        versions=dict(softmaxlab=__version__, python=platform.python_version(), torch=torch.__version__,
                      numpy=numpy.__version__),
        git_commit=git_commit(),
        machine=dict(host=platform.node(), cpu=cpu_model(), cores=os.cpu_count(), platform=platform.platform(),
                     gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None),
        command=command_line(),
    )


CSV_FIELDS = ["run_id", "name", "model", "layers", "width", "params", "seed", "precision", "status",
              "test_acc", "test_loss", "val_acc", "val_loss", "epochs_done", "wall_time_s", "train_time_s",
              "device", "lr", "init_seed", "data_seed", "diagnostics"]
# from the config, which of an architecture's runs at one seed this is; the value where a record predates the field
CONFIG_COLUMNS = dict(lr=None, init_seed=None, data_seed=None, diagnostics=False)


def results_csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in sorted(results, key=lambda r: (r["name"], r["seed"], r["run_id"])):
        w.writerow(dict(r, **{k: r["config"].get(k, v) for k, v in CONFIG_COLUMNS.items()}))
    return buf.getvalue()
