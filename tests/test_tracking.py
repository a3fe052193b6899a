"""--track mlflow / tensorboard with the real libraries (skipped where not installed): what they store must equal
the run records under --out."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.extras.tracking import make_tracker
from softmaxlab.mnist import records as runs
from softmaxlab.mnist.configs import TrainConfig
from softmaxlab.mnist.runner import execute
from softmaxlab.mnist.study import load_data

TINY = TrainConfig(width=16, epochs=2, train_subset=500, eval_subset=200)
SWEEP = ["sweep", "--layers", "1-2", "--seeds", "0", "--width", "16", "--epochs", "2", "--train-subset", "500",
         "--eval-subset", "200"]


def cli(*args, cwd, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "softmaxlab", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=180)


def records(out):
    """{run_id: (config.json, metrics.jsonl rows, result.json)} of every run under out."""
    got = {}
    for d in (out / "runs").iterdir():
        got[d.name] = (json.loads((d / "config.json").read_text()),
                       [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()],
                       json.loads((d / "result.json").read_text()))
    return got


@pytest.fixture(scope="module")
def data(mnist_dir):
    return load_data(mnist_dir)


def test_make_tracker_kinds(tmp_path):
    assert make_tracker(None, tmp_path) is None and make_tracker("none", tmp_path) is None
    with pytest.raises(SoftmaxlabError, match="--track 'wandb' is unknown: use none, mlflow, tensorboard"):
        make_tracker("wandb", tmp_path)


@pytest.mark.parametrize("args,words", [
    (["--track", "wandb"], ["--track", "mlflow"]),
    (["--executor", "dask"], ["--executor", "ray"]),
    (["--address", "auto"], ["--address", "--executor ray"]),
])
def test_sweep_option_errors_are_one_line_and_write_nothing(args, words, tmp_path):
    out = tmp_path / "out"
    p = cli(*SWEEP, "--out", str(out), *args, cwd=tmp_path, env={"SOFTMAXLAB_DATA": str(tmp_path)})
    assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert all(w in p.stderr for w in words), p.stderr
    assert not out.exists() and not (tmp_path / "mlruns.db").exists()


# ---- MLflow ---------------------------------------------------------------------------------------------


def mlflow_runs(uri, out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(f"softmaxlab {out.resolve()}")
    assert exp is not None
    return client, {r.data.tags["softmaxlab_run_id"]: r for r in client.search_runs([exp.experiment_id])}


def assert_mlflow_matches_records(client, by_rid, out):
    recs = records(out)
    assert set(by_rid) == set(recs) | {"study"}
    parent = by_rid["study"].info.run_id
    for rid, (config, history, result) in recs.items():
        r = by_rid[rid]
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent
        assert r.data.tags["status"] == "ok" and r.info.run_name == f"{result['name']} seed={result['seed']}"
        assert r.data.params == {k: str(v) for k, v in config["identity"].items()}
        for key in ("train_loss", "val_loss", "val_acc"):
            hist = client.get_metric_history(r.info.run_id, key)
            assert sorted((m.step, m.value) for m in hist) == [(h["epoch"], h[key]) for h in history], key
        assert r.data.metrics["test_acc"] == result["test_acc"] and r.data.metrics["params"] == result["params"]


@pytest.mark.slow
def test_sweep_with_track_mlflow_default_store(mnist_dir, tmp_path):
    pytest.importorskip("mlflow", reason="needs the mlflow extra: pip install -e '.[mlflow]'")
    out = tmp_path / "sweep"
    args = [*SWEEP, "--out", str(out), "--track", "mlflow"]
    p = cli(*args, cwd=tmp_path, env={"SOFTMAXLAB_DATA": str(mnist_dir)})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "mlruns.db").exists()  # the default store: sqlite:///mlruns.db in the current folder
    client, by_rid = mlflow_runs(f"sqlite:///{tmp_path / 'mlruns.db'}", out)
    assert_mlflow_matches_records(client, by_rid, out)
    arts = {a.path for a in client.list_artifacts(by_rid["study"].info.run_id)}
    assert {"results.csv", "summary.json"} <= arts
    # re-running finds everything done: no new MLflow runs, nothing logged twice
    assert cli(*args, cwd=tmp_path, env={"SOFTMAXLAB_DATA": str(mnist_dir)}).returncode == 0
    client, again = mlflow_runs(f"sqlite:///{tmp_path / 'mlruns.db'}", out)
    assert set(again) == set(by_rid)
    assert_mlflow_matches_records(client, again, out)


@pytest.mark.slow
def test_mlflow_resume_continues_the_interrupted_run(data, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="needs the mlflow extra: pip install -e '.[mlflow]'")
    from softmaxlab.extras.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "out"

    class Interrupted(Exception):
        pass

    class StopAfterFirstEpoch(MlflowTracker):  # the real tracker; the run is killed after epoch 1 is logged
        def log_epoch(self, rid, rec):
            super().log_epoch(rid, rec)
            raise Interrupted

    t = StopAfterFirstEpoch(out)
    with pytest.raises(Interrupted):
        execute([TINY], out, data, log=lambda s: None, tracker=t)
    t.close()
    client, by_rid = mlflow_runs(uri, out)
    rid = runs.run_id(TINY.identity())
    assert by_rid[rid].info.status == "KILLED"
    t = make_tracker("mlflow", out)
    execute([TINY], out, data, log=lambda s: None, tracker=t)
    t.close()
    client, by_rid = mlflow_runs(uri, out)
    assert_mlflow_matches_records(client, by_rid, out)  # one MLflow run, epochs 1 and 2 once each


# ---- TensorBoard ----------------------------------------------------------------------------------------


def test_tensorboard_scalars_equal_the_records(data, tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    cfgs = [dataclasses.replace(TINY, layers=L) for L in (1, 2)]
    t = make_tracker("tensorboard", out)
    results = execute(cfgs, out, data, log=lambda s: None, tracker=t)
    t.close()
    recs = records(out)
    dirs = sorted((out / "tb").iterdir())
    assert [d.name for d in dirs] == sorted(f"{r['name']}-seed0-{r['run_id']}" for r in results)
    for d in dirs:
        _, history, result = recs[d.name.rsplit("-", 1)[1]]
        acc = EventAccumulator(str(d))
        acc.Reload()
        for key in ("train_loss", "val_loss", "val_acc", "epoch_time_s"):
            got = [(e.step, e.value) for e in acc.Scalars(key)]
            assert [s for s, _ in got] == [h["epoch"] for h in history], key
            assert got == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in history], key  # float32
        (test,) = acc.Scalars("test_acc")
        assert test.step == 2 and test.value == pytest.approx(result["test_acc"], rel=1e-6)
