"""Two processes on one --out: a per-run fcntl lock keeps them from training the same run twice, and a dead
holder's lock goes with it (the kernel drops it), so the survivor takes the run over from its checkpoint."""

import dataclasses
import importlib.util
import signal
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

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reliability", ROOT / "scripts" / "reliability.py")
rel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rel)

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that takes the lock file's lock and keeps it `seconds` (or until killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def fake_data(n: int = 256) -> Data:
    return fakes.fake_data(n, 128)


def test_lock_excludes_another_process_and_dies_with_it(tmp_path):
    lock = tmp_path / "lock"
    holder = hold(lock, 60)
    try:
        with runs.try_lock(lock) as got:
            assert got is False
        holder.send_signal(signal.SIGKILL)  # a holder killed mid-run: no stale lock left to clean up
        holder.wait()
        with runs.try_lock(lock) as got:
            assert got is True
            with runs.try_lock(lock) as again:  # flock is per open file: a second open is excluded too
                assert again is False
    finally:
        holder.kill()
        holder.wait()


def test_waiting_for_a_lock_returns_when_the_holder_lets_go(tmp_path):
    lock = tmp_path / "lock"
    holder = hold(lock, 0.5)
    t0 = time.monotonic()
    with runs.try_lock(lock, wait=True) as got:
        assert got is True and time.monotonic() - t0 >= 0.3
    holder.wait()


def test_execute_skips_a_locked_run_then_takes_it_over_when_its_holder_dies(tmp_path):
    """Another process holds run A's lock (and has checkpointed nothing): execute trains B and C first, then
    waits on A; the holder is killed, so execute gets A's lock and trains it. Each run is trained once."""
    base = TrainConfig(model="mlp", layers=1, width=16, epochs=1, lr=0.05, device="cpu", threads=1)
    plan = [dataclasses.replace(base, seed=s) for s in range(3)]
    out = tmp_path / "out"
    d = out / "runs" / runs.run_id(plan[0].identity())
    d.mkdir(parents=True)
    holder = hold(d / "lock", 60)
    lines: list[str] = []

    def log(s):
        lines.append(s)
        if len(lines) == 2:  # B and C are done while A is locked: now its holder dies
            holder.send_signal(signal.SIGKILL)

    try:
        res = execute(plan, out, fake_data(), progress=False, log=log)
    finally:
        holder.kill()
        holder.wait()
    assert [r["seed"] for r in res] == [0, 1, 2] and all(r["status"] == "ok" for r in res)
    assert [line.split(":")[0].split()[2] for line in lines] == ["seed=1", "seed=2", "seed=0"]
    # Re-running trains nothing: every result is read back as it is.
    again: list[str] = []
    assert execute(plan, out, fake_data(), progress=False, log=again.append) == res and again == []


@pytest.mark.slow
def test_two_sweeps_on_one_out_never_train_a_run_twice(mnist_dir, tmp_path):
    """Two `softmaxlab sweep` processes on one --out, plainly and with one SIGKILLed mid-way (then restarted)."""
    env = rel.child_env(mnist_dir)
    res = rel.concurrency_campaign(tmp_path, tmp_path / "uninterrupted", pairs=1, seed=0, env=env,
                                   log=lambda s: None)
    assert res["races"] == 2 and res["races_with_kill"] == 1
    assert res["problems"] == []
    assert res["trained_twice"] == res["never_trained"] == res["lost"] == res["mismatched"] == 0


def test_two_studies_racing_for_a_fresh_out_cannot_both_claim_it(tmp_path, monkeypatch):
    """Both processes saw no study.json; the one that creates it second must not overwrite the first's."""
    from softmaxlab.errors import SoftmaxlabError
    from softmaxlab.mnist.study import check_study

    path = tmp_path / "study.json"
    assert runs.write_json(path, dict(kind="sweep", protocol=dict(epochs=2)), exclusive=True) is True
    assert runs.write_json(path, dict(kind="sweep", protocol=dict(epochs=1)), exclusive=True) is False
    assert not [p for p in tmp_path.iterdir() if p.name != "study.json"]  # no temp file left
    real, calls = runs.read_json, []

    def stale_read(p):  # this process looked just before the other one wrote
        calls.append(p)
        return None if len(calls) == 1 else real(p)

    monkeypatch.setattr(runs, "read_json", stale_read)
    with pytest.raises(SoftmaxlabError, match="differs in epochs"):
        check_study(tmp_path, "sweep", dict(epochs=1))
    assert real(path)["protocol"] == dict(epochs=2) and len(calls) == 2
