"""Kill-safety: a sweep SIGKILLed at random moments (also inside writes) and restarted loses nothing and ends
with the results of an uninterrupted one, bitwise. The campaign lives in scripts/reliability.py."""

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import fakes
import pytest

from softmaxlab.mnist import records as runs
from softmaxlab.mnist.configs import TrainConfig
from softmaxlab.mnist.data import Data
from softmaxlab.mnist.runner import execute
from softmaxlab.mnist.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reliability", ROOT / "scripts" / "reliability.py")
rel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rel)

BASE = TrainConfig(model="mlp", layers=1, width=16, epochs=2, batch_size=64, lr=0.05, device="cpu", threads=1)
PLAN = [dataclasses.replace(BASE, layers=L, seed=s) for L in (1, 2) for s in (0, 1)]


def fake_data(n: int = 256) -> Data:
    return fakes.fake_data(n, 128)


def sweep_in_process(out: Path, data) -> list[dict]:
    """What `softmaxlab sweep` records, on fake data: run folders, results.csv, summary.json."""
    res = execute(PLAN, out, data, progress=False, log=lambda s: None)
    runs.atomic_write(out / "results.csv", runs.results_csv(res))
    runs.write_json(out / "summary.json", dict(rows=summarize(res)))
    return res


@pytest.fixture(scope="module")
def data():
    return fake_data(n=256)


@pytest.fixture
def ref(tmp_path, data):
    sweep_in_process(tmp_path / "ref", data)
    return tmp_path / "ref"


def test_verify_accepts_an_identical_sweep_and_catches_each_fault(tmp_path, data, ref):
    """The campaign's checker passes a clean re-run and fails on every kind of damage it is meant to find."""
    out = tmp_path / "again"
    sweep_in_process(out, data)
    v = rel.verify(out, ref)
    assert v["problems"] == [] and v["complete"] == v["planned"] == 4

    def damaged(fn) -> list[str]:
        d = tmp_path / "damaged"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(out, d)
        fn(d)
        return rel.verify(d, ref)["problems"]

    rid = sorted(p.name for p in (out / "runs").iterdir())[0]

    def tamper(d):
        p = d / "runs" / rid / "result.json"
        r = json.loads(p.read_text())
        r["history"][0]["train_loss"] += 1e-12
        p.write_text(json.dumps(r))

    assert any("differs" in p for p in damaged(tamper))
    assert any("no result" in p for p in damaged(lambda d: (d / "runs" / rid / "result.json").unlink()))
    assert any("corrupt JSON" in p for p in damaged(lambda d: (d / "summary.json").write_text('{"rows": [')))
    assert any("duplicate" in p for p in damaged(
        lambda d: (d / "results.csv").write_text((d / "results.csv").read_text() +
                                                 (d / "results.csv").read_text().splitlines()[1] + "\n")))
    assert any("temp files" in p for p in damaged(lambda d: (d / "runs" / rid / ".result.json.tmp1").write_text("{")))
    assert any("metrics.jsonl" in p for p in damaged(
        lambda d: (d / "runs" / rid / "metrics.jsonl").write_text(
            (d / "runs" / rid / "metrics.jsonl").read_text().splitlines()[0] + "\n")))


def test_kill_between_last_checkpoint_and_result_resumes_bitwise(tmp_path, data, ref):
    """The state a kill leaves after the last epoch's checkpoint, before metrics.jsonl and result.json."""
    out = tmp_path / "out"
    sweep_in_process(out, data)
    for d in (out / "runs").iterdir():
        (d / "result.json").unlink()
        (d / "metrics.jsonl").write_text((d / "metrics.jsonl").read_text().splitlines()[0] + "\n")
        (d / ".result.json.tmp999999999").write_text('{"half": ')  # a dead writer's temp file
    (out / "results.csv").unlink()
    (out / "summary.json").unlink()
    sweep_in_process(out, data)
    assert rel.verify(out, ref)["problems"] == []


def test_kill_mid_run_resumes_from_its_checkpoint_bitwise(tmp_path, data, ref):
    out = tmp_path / "out"
    one = dataclasses.replace(PLAN[0], epochs=1)  # a run killed after its first epoch: checkpoint at epoch 1
    execute([one], tmp_path / "scratch", data, progress=False, log=lambda s: None)
    rid = runs.run_id(PLAN[0].identity())
    src = tmp_path / "scratch" / "runs" / runs.run_id(one.identity())
    (out / "runs" / rid).mkdir(parents=True)
    shutil.copy(src / "checkpoint.pt", out / "runs" / rid / "checkpoint.pt")
    shutil.copy(src / "metrics.jsonl", out / "runs" / rid / "metrics.jsonl")
    sweep_in_process(out, data)
    assert rel.verify(out, ref)["problems"] == []


def test_stale_temps_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and stays unreaped until wait()
    while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.01)
    try:
        names = {f".result.json.tmp{dead_pid}": False, f"checkpoint.pt.tmp{dead_pid}": False,
                 f".write-probe{dead_pid}": False, f".checkpoint.pt.tmp{zombie.pid}": False,
                 f".metrics.jsonl.tmp{live.pid}": True, "result.json": True, "checkpoint.pt": True,
                 "notes.tmp": True}
        for n in names:
            (tmp_path / n).write_text("x")
        assert runs.remove_stale_temps(tmp_path) == 4
        assert {p.name for p in tmp_path.iterdir()} == {n for n, keep in names.items() if keep}
    finally:
        live.kill()
        live.wait()
        zombie.wait()


@pytest.mark.slow
def test_sweep_survives_20_random_kills(mnist_dir, tmp_path):
    """`softmaxlab sweep` SIGKILLed >= 20 times, seeded: after random delays in [0.3, 2.5] s, from inside its n-th
    fsync (a kill that always lands inside a write), and just after its n-th checkpoint (a kill that always leaves
    a run part-way, however slow the machine's startup); restarted each time. Each restart pays Python + torch
    startup (~2 s), so the test's time is mostly that: 20 kills are 40-70 s on 2 cores."""
    res = rel.kill_campaign(tmp_path, kills=20, seed=0, lo=0.3, hi=2.5, env=rel.child_env(mnist_dir),
                            modes=("time", "in-write", "after-checkpoint", "time"), log=lambda s: None)
    assert res["kills"] >= 20, res
    assert res["by_mode"].get("in-write", 0) >= 3 and res["by_mode"].get("after-checkpoint", 0) >= 3, res
    assert res["kills_in_write"] >= res["by_mode"]["in-write"], res  # each of those left a temp file behind
    assert res["resumes"] >= 1 and res["epochs_between_kills"] >= 1, res  # kills interrupted real training
    assert res["problems"] == [], res
    assert res["lost"] == res["duplicates"] == res["mismatched"] == 0, res
    assert res["complete"] == res["planned"] >= 4, res
