"""study.execute with several training processes (workers.py): the same numbers as one process, every run
trained once, helpers that die with their parent."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fakes
import pytest

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist import records as runs
from softmaxlab.mnist import runner as workers
from softmaxlab.mnist.configs import ReproduceConfig, TrainConfig
from softmaxlab.mnist.runner import execute

TESTS = Path(__file__).resolve().parent
BASE = TrainConfig(model="mlp", layers=1, width=24, epochs=2, lr=0.05, device="cpu")
PLAN = [dataclasses.replace(BASE, layers=L, seed=s) for L in (1, 2, 3) for s in (0, 1)] + \
       [dataclasses.replace(BASE, model="linear", seed=0)]


def strip(r: dict) -> dict:
    """A result without what only says when, where and how fast it ran."""
    drop = {"wall_time_s", "train_time_s", "started", "finished", "hostname", "git_commit", "pid", "config"}
    out = {k: v for k, v in r.items() if k not in drop and "time" not in k}
    out["history"] = [{k: v for k, v in h.items() if "time" not in k} for h in r["history"]]
    return out


def test_two_workers_give_one_process_numbers_bitwise(tmp_path):
    data = fakes.fake_data(512, 128)
    one = execute([dataclasses.replace(c, threads=1) for c in PLAN], tmp_path / "one", data, progress=False,
                  log=lambda s: None, workers=1)
    two = execute(PLAN, tmp_path / "two", data, progress=False, log=lambda s: None, workers=2)
    assert [r["run_id"] for r in two] == [runs.run_id(c.identity()) for c in PLAN]  # plan order kept
    assert all(r["status"] == "ok" and r["threads"] == max(1, workers.cpu_count() // 2) for r in two)
    if workers.cpu_count() // 2 == 1:  # the thread count decides the rounding: compare like with like
        assert [strip(r) for r in two] == [strip(r) for r in one]
    # every run has exactly one result and one config; nothing left half-written
    for c in PLAN:
        d = tmp_path / "two" / "runs" / runs.run_id(c.identity())
        assert (d / "result.json").exists() and not [p for p in d.iterdir() if p.name.startswith(".")]
    again = []
    assert execute(PLAN, tmp_path / "two", data, progress=False, log=again.append, workers=2) == two
    assert again == []  # all done: nothing trained, no helper started


def test_worker_count_and_threads():
    cpu = [dataclasses.replace(BASE, seed=s) for s in range(5)]
    n = workers.cpu_count()
    assert workers.resolve(None, cpu) == min(n, 5)
    assert workers.resolve(None, cpu, tracker=object()) == 1  # a tracker's connections live in this process
    assert workers.resolve(8, cpu[:3]) == 3 and workers.resolve(1, cpu) == 1
    assert {c.threads for c in workers.per_worker(cpu, n)} == {1}
    assert workers.per_worker([dataclasses.replace(BASE, threads=3)], 2)[0].threads == 3  # asked for: kept
    order = workers.longest_first([dataclasses.replace(BASE, model="linear"), *cpu[:1],
                                   dataclasses.replace(BASE, layers=8)])
    assert [(c.model, c.layers) for c in order] == [("mlp", 8), ("mlp", 1), ("linear", 1)]
    with pytest.raises(SoftmaxlabError, match="--workers 0 is invalid"):
        ReproduceConfig(workers=0).plan()


HELPER_PARENT = """
import dataclasses, sys
sys.path.insert(0, {tests!r})
import fakes
from softmaxlab.mnist.runner import execute
from softmaxlab.mnist.configs import TrainConfig
base = TrainConfig(model="mlp", layers=2, width=256, epochs=1000, lr=0.05, device="cpu")
plan = [dataclasses.replace(base, seed=s) for s in range(4)]
if __name__ == "__main__":
    execute(plan, {out!r}, fakes.fake_data(4096, 64), progress=False, log=lambda s: None, workers=2)
"""


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_helpers_die_with_their_parent(tmp_path):
    """kill -9 of the process that started the helpers takes them down too: nothing trains on unattended."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(HELPER_PARENT.format(tests=str(TESTS), out=str(tmp_path / "out"))))
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 60
        kids = []
        while time.monotonic() < deadline and not kids:
            time.sleep(0.2)
            kids = [k for k in children(parent.pid)
                    if b"multiprocessing" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert kids, "no helper process started"
        time.sleep(1.0)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5  # their runs have minutes of work left
        while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() and
                                                  "Z" not in Path(f"/proc/{k}/stat").read_text().split()[2]
                                                  for k in kids):
            time.sleep(0.2)
        alive = [k for k in kids if Path(f"/proc/{k}").exists()
                 and Path(f"/proc/{k}/stat").read_text().split()[2] != "Z"]
        assert alive == [], f"helpers {alive} outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_runs_thread_count_does_not_leak_into_the_caller():
    """Problem 1 runs in the process that trained with one thread per run: it must get its cores back."""
    import torch

    from softmaxlab.mnist.train import train

    before = torch.get_num_threads()
    res = train(dataclasses.replace(BASE, threads=1, epochs=1), fakes.fake_data(128, 64))
    assert res["threads"] == 1 and torch.get_num_threads() == before


class Writes:
    """A stdout that records each write() call: one call per line is what keeps lines whole on a shared pipe."""

    def __init__(self):
        self.calls = []

    def write(self, s):
        self.calls.append(s)
        return len(s)

    def flush(self):
        pass


def test_each_done_line_is_one_write(tmp_path, monkeypatch):
    """print() writes the text, then the newline; unbuffered (PYTHONUNBUFFERED) those are two writes, and a
    helper's line landed between them in CI ('...cpu)done mlp-L5...'). execute's log writes once: by default,
    given print, and given print after Ray swapped builtins.print for its own (tqdm_ray does, in-process)."""
    import builtins

    real_print = builtins.print

    def ray_print(*a, **k):  # tqdm_ray's safe_print, as far as stdout sees it
        real_print(*a, **k)

    data = fakes.fake_data(128, 64)
    for patched in (False, True):
        for given_print in (False, True):
            with monkeypatch.context() as m:
                if patched:
                    m.setattr(builtins, "print", ray_print)
                m.setattr(sys, "stdout", Writes())
                execute(PLAN[:2], tmp_path / f"{patched}{given_print}", data, progress=False, workers=1,
                        **({"log": builtins.print} if given_print else {}))
                calls = sys.stdout.calls
            assert len(calls) == 2 and all(c.startswith("done ") and c.count("\n") == 1 and c.endswith("\n")
                                           for c in calls), (patched, given_print, calls)


def test_helpers_print_with_one_write_too(monkeypatch):
    """A helper echoes its done lines with the same one-write say() (run in-process, its process set-up off)."""
    got = {}
    monkeypatch.setattr(workers, "_die_with_parent", lambda parent: None)
    monkeypatch.setattr(workers.signal, "signal", lambda *a: None)
    monkeypatch.setattr(workers.tqdm, "set_lock", lambda lock: None)
    monkeypatch.setattr(workers, "execute", lambda *a, log, **k: got.setdefault("log", log))
    workers._helper(PLAN, "out", None, True, os.getpid())
    assert got["log"] is workers.say
