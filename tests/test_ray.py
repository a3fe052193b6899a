"""The Ray executor on a local Ray instance (2 CPUs): the same records and results as the local executor, resume,
locking, worker failures, and the CLI pointed at a running cluster."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")

import torch  # noqa: E402

from softmaxlab.errors import SoftmaxlabError  # noqa: E402
from softmaxlab.extras.ray import execute_ray, shortfall  # noqa: E402
from softmaxlab.mnist import records as runs  # noqa: E402
from softmaxlab.mnist.configs import TrainConfig  # noqa: E402
from softmaxlab.mnist.records import load_checkpoint  # noqa: E402
from softmaxlab.mnist.runner import execute  # noqa: E402
from softmaxlab.mnist.study import load_data  # noqa: E402
from softmaxlab.mnist.train import train  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray instance takes ~10 s to start; the tests after it take seconds

# threads=1 here and in the local runs: a Ray task holds one CPU, and torch's CPU reductions are bitwise
# reproducible only at the same thread count.
TINY = TrainConfig(width=16, epochs=2, train_subset=500, eval_subset=200, threads=1)
PLAN = [dataclasses.replace(TINY, layers=L, seed=s) for L in (1, 2) for s in (0, 1)] + [
    dataclasses.replace(TINY, model="linear", seed=0)]
VOLATILE = {"wall_time_s", "train_time_s", "threads", "machine", "versions", "command", "git_commit"}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def data(mnist_dir):
    return load_data(mnist_dir)


@pytest.fixture(scope="module")
def local(data, tmp_path_factory):
    """The local executor's records of PLAN: what Ray must reproduce."""
    out = tmp_path_factory.mktemp("local")
    return out, execute(PLAN, out, data, log=lambda s: None)


class Recorder:
    """A tracker that remembers the calls study.py makes (our own interface, not a library's)."""

    def __init__(self):
        self.calls = []

    def start_run(self, rid, name, params):
        self.calls.append(("start", rid, name))

    def log_epoch(self, rid, rec):
        self.calls.append(("epoch", rid, rec["epoch"]))

    def end_run(self, rid, result):
        self.calls.append(("end", rid, result["status"]))


def stable(result: dict) -> dict:
    r = {k: v for k, v in result.items() if k not in VOLATILE}
    r["history"] = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in r["history"]]
    return r


def metrics(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"} for line in open(path)]


def assert_same_run(a_dir, b_dir):
    assert sorted(p.name for p in a_dir.iterdir()) == sorted(p.name for p in b_dir.iterdir())
    assert json.loads((a_dir / "config.json").read_text()) == json.loads((b_dir / "config.json").read_text())
    assert metrics(a_dir / "metrics.jsonl") == metrics(b_dir / "metrics.jsonl")
    assert stable(json.loads((a_dir / "result.json").read_text())) == \
        stable(json.loads((b_dir / "result.json").read_text()))
    ca, cb = load_checkpoint(a_dir / "checkpoint.pt"), load_checkpoint(b_dir / "checkpoint.pt")
    assert ca["epoch"] == cb["epoch"] and ca["model"].keys() == cb["model"].keys()
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert torch.equal(ca["shuffle_rng"], cb["shuffle_rng"])


def test_ray_results_and_records_equal_the_local_executor(cluster, data, local, tmp_path):
    local_out, local_results = local
    rec = Recorder()
    got = execute_ray(PLAN, tmp_path, data, log=lambda s: None, tracker=rec)
    assert [stable(r) for r in got] == [stable(r) for r in local_results]
    for r in got:
        assert_same_run(local_out / "runs" / r["run_id"], tmp_path / "runs" / r["run_id"])
        assert r["threads"] == 1 and r["machine"]["host"]  # the worker's, recorded by the driver
        assert [c[0] for c in rec.calls if c[1] == r["run_id"]] == ["start", "epoch", "epoch", "end"]
    # everything is done: a second call trains nothing and returns the same records
    rec2 = Recorder()
    assert execute_ray(PLAN, tmp_path, data, log=lambda s: None, tracker=rec2) == got and rec2.calls == []


def test_ray_resumes_an_interrupted_run_from_its_checkpoint(cluster, data, local, tmp_path):
    _, local_results = local
    done_cfg, partial_cfg, fresh_cfg = PLAN[0], PLAN[1], PLAN[2]
    execute([done_cfg], tmp_path, data, log=lambda s: None)
    done_before = json.loads((tmp_path / "runs" / runs.run_id(done_cfg.identity()) / "result.json").read_text())
    # a run killed after its first epoch: checkpoint written, metrics.jsonl not yet (the kill window)
    d = tmp_path / "runs" / runs.run_id(partial_cfg.identity())
    d.mkdir(parents=True)
    train(dataclasses.replace(partial_cfg, epochs=1), data, checkpoint=d / "checkpoint.pt")
    rec = Recorder()
    got = execute_ray([done_cfg, partial_cfg, fresh_cfg], tmp_path, data, log=lambda s: None, tracker=rec)
    assert got[0] == done_before  # not retrained
    assert stable(got[1]) == stable(local_results[1]) and stable(got[2]) == stable(local_results[2])
    rid = got[1]["run_id"]
    assert [c for c in rec.calls if c[1] == rid] == [("start", rid, got[1]["name"]), ("epoch", rid, 2),
                                                     ("end", rid, "ok")]  # only the epoch trained now
    assert len(metrics(d / "metrics.jsonl")) == 2


def test_ray_leaves_a_locked_run_to_its_holder_and_waits_for_it(cluster, data, local, tmp_path):
    _, local_results = local
    cfgs = PLAN[:3]
    d = tmp_path / "runs" / runs.run_id(cfgs[1].identity())
    d.mkdir(parents=True)
    box: list = []
    with runs.try_lock(d / "lock") as got:  # another process is training cfgs[1]
        assert got
        t = threading.Thread(target=lambda: box.append(execute_ray(cfgs, tmp_path, data, log=lambda s: None)))
        t.start()
        others = [tmp_path / "runs" / runs.run_id(c.identity()) / "result.json" for c in (cfgs[0], cfgs[2])]
        deadline = time.time() + 60
        while not all(p.exists() for p in others) and time.time() < deadline:
            time.sleep(0.1)
        assert all(p.exists() for p in others)
        time.sleep(0.5)
        assert not (d / "result.json").exists() and not (d / "config.json").exists()  # Ray kept off it
        theirs = dict(local_results[1], marker="written by the lock holder")
        runs.write_json(d / "result.json", theirs)
    t.join(60)
    assert not t.is_alive() and box[0][1] == theirs


def test_a_failing_task_fails_the_sweep_after_the_others_are_recorded(cluster, data, tmp_path):
    bad = dataclasses.replace(TINY, lr=-1.0)  # train() rejects it on the worker
    with pytest.raises(SoftmaxlabError, match=r"1 run\(s\) failed on Ray workers.*lr"):
        execute_ray([PLAN[0], bad], tmp_path, data, log=lambda s: None)
    assert (tmp_path / "runs" / runs.run_id(PLAN[0].identity()) / "result.json").exists()
    bad_dir = tmp_path / "runs" / runs.run_id(bad.identity())
    assert not (bad_dir / "result.json").exists()
    with runs.try_lock(bad_dir / "lock") as got:
        assert got  # released


def test_cli_sweep_on_a_running_cluster(cluster, mnist_dir, local, tmp_path):
    """`softmaxlab sweep --executor ray --address <cluster>`: a second process joins the running cluster
    (its workers get this softmaxlab through the runtime env), and the summary matches the local runs."""
    _, local_results = local
    out = tmp_path / "sweep"
    env = dict(os.environ, SOFTMAXLAB_DATA=str(mnist_dir))
    env.pop("RAY_ADDRESS", None)
    args = ["sweep", "--layers", "1-2", "--seeds", "0-1", "--width", "16", "--epochs", "2", "--train-subset", "500",
            "--eval-subset", "200", "--threads", "1", "--out", str(out), "--executor", "ray", "--address", cluster]
    p = subprocess.run([sys.executable, "-m", "softmaxlab", *args], capture_output=True, text=True, env=env,
                       timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "mlp-L1-k16" in p.stdout and "mlp-L2-k16" in p.stdout
    assert len(json.loads((out / "summary.json").read_text())["rows"]) == 2
    got = {r["run_id"]: r for r in (json.loads(f.read_text()) for f in out.glob("runs/*/result.json"))}
    assert len(got) == 4
    for r in local_results[:4]:
        assert stable(got[r["run_id"]]) == stable(r)


def test_shortfall_names_what_a_task_lacks():
    assert shortfall(dict(num_cpus=1, num_gpus=0), {"CPU": 2.0}) == []
    assert shortfall(dict(num_cpus=1, num_gpus=1), {"CPU": 2.0, "GPU": 1.0}) == []
    (gpu,) = shortfall(dict(num_cpus=1, num_gpus=1), {"CPU": 2.0})
    assert "--device cuda" in gpu
    (cpu,) = shortfall(dict(num_cpus=4, num_gpus=0), {"CPU": 2.0})
    assert "4 CPU(s)" in cpu and "has 2 now" in cpu
