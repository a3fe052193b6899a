"""Optional experiment tracking: MLflow or TensorBoard, chosen by --track, imported only when chosen.

The run records under --out stay the source of truth; a tracker is a second copy for a tracking UI.
study.py calls, in the process that writes the records:

    start_run(run_id, name, params)   a run starts (or resumes) training; params = the run's identity
    log_epoch(run_id, rec)            one finished epoch (the dict written to metrics.jsonl)
    end_run(run_id, result)           result.json was written
    log_artifact(path, subdir=None)   a file of the whole study (report, summary), under subdir
    close()                           the sweep or study is over

MLflow: one experiment per --out ("softmaxlab <absolute --out>", or $MLFLOW_EXPERIMENT_NAME), one MLflow run per
run, nested under one parent run that holds the artifacts; a resumed run continues its MLflow run (found by
its tag), so re-running a sweep never duplicates runs. Store: $MLFLOW_TRACKING_URI, else sqlite:///mlruns.db
in the current folder (artifacts in ./mlruns), which `mlflow ui --backend-store-uri sqlite:///mlruns.db` opens.

TensorBoard: scalars per epoch in <out>/tb/<name>-seed<seed>-<run_id>/, written by torch.utils.tensorboard's
SummaryWriter (it needs the tensorboard package); `tensorboard --logdir <out>/tb` shows them. TensorBoard has
no artifact store: log_artifact does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import SoftmaxlabError

KINDS = ("none", "mlflow", "tensorboard")
DEFAULT_MLFLOW_URI = "sqlite:///mlruns.db"
_EPOCH_KEYS = ("train_loss", "val_loss", "val_acc", "epoch_time_s")
_FINAL_KEYS = ("test_acc", "test_loss", "train_time_s", "wall_time_s")  # val_* are in the last epoch


def make_tracker(kind: str | None, out: str | os.PathLike):
    """The tracker for --track `kind` (none/None: no tracker) of the study under `out`."""
    if kind in (None, "none"):
        return None
    if kind == "mlflow":
        return MlflowTracker(Path(out))
    if kind == "tensorboard":
        return TensorboardTracker(Path(out))
    raise SoftmaxlabError(f"--track {kind!r} is unknown: use {', '.join(KINDS)}")


def _missing(kind: str, extra: str) -> SoftmaxlabError:
    return SoftmaxlabError(f"--track {kind} needs the {extra} package: pip install 'softmaxlab[{extra}]' "
                           f"(or drop --track)")


def _numbers(d: dict, keys) -> dict[str, float]:
    return {k: float(d[k]) for k in keys if isinstance(d.get(k), (int, float)) and not isinstance(d[k], bool)}


class MlflowTracker:
    TAG = "softmaxlab_run_id"  # our run id on each MLflow run; the parent run's is "study"

    def __init__(self, out: Path):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        from mlflow.exceptions import MlflowException

        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"softmaxlab {out.resolve()}"
        try:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(name)
                except MlflowException:  # another process on the same --out created it first
                    self.experiment_id = self.client.get_experiment_by_name(name).experiment_id
            else:
                self.experiment_id = exp.experiment_id
        except MlflowException as e:
            raise SoftmaxlabError(f"MLflow store {self.uri} is unusable ({' '.join(str(e).split())[:120]}): "
                                  f"set MLFLOW_TRACKING_URI to a working store") from None
        self.out = out
        self.open: dict[str, str] = {}  # our run id -> MLflow run id, for runs started and not ended
        self._parent: str | None = None

    def _find(self, rid: str):
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.{self.TAG} = '{rid}'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def _start(self, rid: str, name: str, tags: dict) -> str:
        mid = self._find(rid)
        if mid is None:
            mid = self.client.create_run(self.experiment_id, run_name=name,
                                         tags={self.TAG: rid, **tags}).info.run_id
        else:  # resumed: continue the MLflow run of the interrupted attempt
            self.client.update_run(mid, status="RUNNING")
        return mid

    def parent(self) -> str:
        if self._parent is None:
            self._parent = self._start("study", self.out.name or str(self.out), {})
        return self._parent

    def start_run(self, rid: str, name: str, params: dict) -> None:
        from mlflow.entities import Param

        seed = params.get("seed")
        mid = self._start(rid, name if seed is None else f"{name} seed={seed}",
                          {"mlflow.parentRunId": self.parent()})
        # params are write-once in MLflow: the identity fields are the same on every resume
        self.client.log_batch(mid, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        self.open[rid] = mid

    def log_epoch(self, rid: str, rec: dict) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        step = int(rec["epoch"])
        self.client.log_batch(self.open[rid], metrics=[Metric(k, v, ts, step)
                                                       for k, v in _numbers(rec, _EPOCH_KEYS).items()])

    def end_run(self, rid: str, result: dict) -> None:
        from mlflow.entities import Metric, RunTag

        mid = self.open.pop(rid)
        ts, step = int(time.time() * 1000), int(result.get("epochs_done") or 0)
        metrics = _numbers(result, _FINAL_KEYS)
        metrics["params"] = float(result["params"])
        machine = result.get("machine") or {}
        tags = dict(status=result["status"], device=result.get("device"), threads=result.get("threads"),
                    git_commit=result.get("git_commit"), host=machine.get("host"))
        self.client.log_batch(mid, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()],
                              tags=[RunTag(k, str(v)) for k, v in tags.items() if v is not None])
        self.client.set_terminated(mid, "FINISHED")

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None:
        self.client.log_artifact(self.parent(), str(path), None if subdir in (None, "", ".") else subdir)

    def close(self) -> None:
        for mid in self.open.values():  # interrupted or failed: resuming reopens them
            self.client.set_terminated(mid, "KILLED")
        self.open.clear()
        if self._parent is not None:
            self.client.set_terminated(self._parent, "FINISHED")
            self._parent = None


class TensorboardTracker:
    def __init__(self, out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        self.SummaryWriter, self.root = SummaryWriter, out / "tb"
        self.writers: dict = {}

    def start_run(self, rid: str, name: str, params: dict) -> None:
        seed = params.get("seed")
        logdir = self.root / (f"{name}-seed{seed}-{rid}" if seed is not None else rid)
        # a new events file per process (a resumed run adds one): TensorBoard reads every file in the folder
        self.writers[rid] = self.SummaryWriter(str(logdir))

    def _scalars(self, rid: str, values: dict[str, float], step: int) -> None:
        w = self.writers[rid]
        for k, v in values.items():
            w.add_scalar(k, v, step)
        w.flush()  # one record per epoch: flush each so a live TensorBoard sees it

    def log_epoch(self, rid: str, rec: dict) -> None:
        self._scalars(rid, _numbers(rec, _EPOCH_KEYS), int(rec["epoch"]))

    def end_run(self, rid: str, result: dict) -> None:
        self._scalars(rid, _numbers(result, ("test_acc", "test_loss")), int(result.get("epochs_done") or 0))
        self.writers.pop(rid).close()

    def log_artifact(self, path, subdir: str | None = None) -> None:
        """TensorBoard stores no files: the report stays under --out."""

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()
