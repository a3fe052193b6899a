"""The first five minutes: `data check` on the files a newcomer really has, `reproduce` without the data and
without a network, and `reproduce`'s progress line."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import fakes
import pytest

from softmaxlab import cli
from softmaxlab.mnist import data, progress

ROOT = Path(__file__).resolve().parents[1]
NAMES = (data.TRAIN_IMAGES, data.TRAIN_LABELS, data.TEST_IMAGES, data.TEST_LABELS)


def softmaxlab(*args, env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The console script the README runs (this interpreter's), else python -m softmaxlab."""
    script = Path(sys.executable).with_name("softmaxlab")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "softmaxlab"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stdout + p.stderr, p.stderr
    lines = p.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


# ---- data check on real MNIST copies, damaged as a newcomer's download is -----------------------------------


def _cut(d: Path, name: str, n: int):
    src = next(d.glob(f"{name}*"))
    raw = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
    src.unlink()
    (d / name).write_bytes(raw[:n])


DAMAGE = {  # shape -> (damage(d), {name: the table's words}) for the files that are BAD
    "truncated": (lambda d: _cut(d, data.TEST_IMAGES, 5000), {data.TEST_IMAGES: "truncated (5,000 of 7,840,016"}),
    "truncated-gz": (lambda d: (d / f"{data.TEST_IMAGES}.gz").write_bytes(
        (d / f"{data.TEST_IMAGES}.gz").read_bytes()[:100_000]), {data.TEST_IMAGES: "corrupt gzip"}),
    "missing": (lambda d: (d / f"{data.TRAIN_LABELS}.gz").unlink(), {data.TRAIN_LABELS: "missing"}),
    "empty-file": (lambda d: (d / f"{data.TEST_LABELS}.gz").write_bytes(b""), {data.TEST_LABELS: "empty"}),
    "garbage": (lambda d: (d / f"{data.TRAIN_LABELS}.gz").write_bytes(random.Random(0).randbytes(30_000)),
                {data.TRAIN_LABELS: "not IDX"}),
    "empty-dir": (lambda d: [p.unlink() for p in d.iterdir()], {n: "missing" for n in NAMES}),
    "a-folder-for-a-file": (lambda d: ((d / f"{data.TEST_LABELS}.gz").unlink(),
                                       (d / f"{data.TEST_LABELS}.gz").mkdir()), {data.TEST_LABELS: "a folder"}),
}


@pytest.mark.parametrize("shape", DAMAGE)
def test_data_check_prints_a_row_per_file_then_one_error(shape, mnist_dir, tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for n in NAMES:
        src = next(p for p in (mnist_dir / n, mnist_dir / f"{n}.gz") if p.is_file())
        shutil.copyfile(src, d / src.name)
    damage, bad = DAMAGE[shape]
    damage(d)
    p = softmaxlab("data", "check", "--data-dir", str(d), env=dict(os.environ, SOFTMAXLAB_CACHE=str(tmp_path / "c")),
                   cwd=tmp_path)
    err = one_error_line(p)
    rows = p.stdout.strip("\n").split("\n")
    assert len(rows) == 4, p.stdout
    for n, row in zip(NAMES, rows):
        if n in bad:
            assert row.startswith(f"BAD {n}") and bad[n] in row, row
        else:
            assert row.startswith(f"ok  {n}") and data.MNIST_FILES[n][0] in row, row
    assert f"{len(bad)} of the 4 MNIST files failed verification" in err and "softmaxlab data check" in err
    assert str(d) in err
    if shape == "truncated-gz":  # README's troubleshooting section quotes this output
        assert readme_quote(1) == (p.stdout + p.stderr).strip("\n").replace(str(d), "DIR")


def test_data_check_on_a_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "mnist"
    f.write_text("not a folder")
    p = softmaxlab("data", "check", "--data-dir", str(f), env=dict(os.environ), cwd=tmp_path)
    err = one_error_line(p)
    assert p.stdout.count("the data dir is a file") == 4 and f"{f} is a file" in err and "--data-dir" in err


# ---- the offline newcomer: no SOFTMAXLAB_DATA, no network ---------------------------------------------------


def dead_ports(n: int) -> list[str]:
    """Ports that were free a moment ago: connection refused, as a machine without a network answers."""
    urls = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            urls.append(f"http://127.0.0.1:{s.getsockname()[1]}/")
    return urls


def newcomer_env(home: Path, mirrors: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOFTMAXLAB_")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), SOFTMAXLAB_MNIST_MIRRORS=",".join(mirrors))
    return env


def readme_quote(i: int = 0) -> str:
    """The i-th code block of README's troubleshooting section, without its language line."""
    text = (ROOT / "README.md").read_text().split("## Troubleshooting", 1)[1]
    block = text.split("```")[2 * i + 1]
    return block.split("\n", 1)[1].strip("\n")


def test_offline_newcomer_hears_once_where_to_put_the_files(tmp_path):
    home, work = tmp_path / "home", tmp_path / "clone"
    home.mkdir()
    work.mkdir()
    t0 = time.monotonic()
    p = softmaxlab("reproduce", env=newcomer_env(home, dead_ports(3)), cwd=work, timeout=60)
    took = time.monotonic() - t0
    err = one_error_line(p)
    assert p.stdout == "" and took < 60
    where = home / ".cache" / "softmaxlab" / "mnist"
    for words in ("no MNIST mirror answered (3 tried, 5 s time-out)", "put the four files", str(where),
                  "SOFTMAXLAB_DATA", "softmaxlab data check", *NAMES):
        assert words in err, (words, err)
    assert err.count("time-out") == 1 and err.count("mirror") == 1
    assert not (work / "results" / "summary.json").exists() and not (work / "results" / "report.html").exists()
    # README's troubleshooting section quotes this very output (the temp home written as ~)
    assert readme_quote() == err.replace(str(home), "~")


def test_a_mirror_that_never_answers_costs_one_short_time_out(tmp_path):
    """A mirror that accepts the connection and then says nothing: 5 s, once, not once per file."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])  # never answered
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    home = tmp_path / "home"
    home.mkdir()
    try:
        t0 = time.monotonic()
        p = softmaxlab("reproduce", env=newcomer_env(home, [f"http://127.0.0.1:{srv.getsockname()[1]}/",
                                                            *dead_ports(2)]), cwd=tmp_path, timeout=60)
        took = time.monotonic() - t0
    finally:
        stop.set()
        for c in held:
            c.close()
        srv.close()
    err = one_error_line(p)
    assert "no MNIST mirror answered (3 tried, 5 s time-out)" in err
    assert 5 <= took < 15, took  # one time-out, not one per file (4) or per file and mirror
    assert len(held) == 1


# ---- reproduce's progress line -----------------------------------------------------------------------------


def test_progress_line_format():
    assert progress.line(0, 27, 5, 0) == "runs 0/27 done, 5s elapsed, ETA after the first run"
    # a resumed study: 2 runs were done before, 3 finished now in 190 s -> 63.3 s a run, 22 left
    assert progress.line(5, 27, 190, 3) == "runs 5/27 done, 3m10s elapsed, ETA 23m13s"
    assert progress.line(27, 27, 4000, 25) == "runs 27/27 done, 1h06m elapsed, all runs done"
    assert [progress.hms(s) for s in (0, 59.4, 60, 3599, 3600, 7325)] == ["0s", "59s", "1m00s", "59m59s", "1h00m",
                                                                           "2h02m"]


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_shows_on_a_terminal_only():
    assert progress.should_show(TTY(), env={})
    assert not progress.should_show(io.StringIO(), env={})  # piped, as in CI logs
    assert not progress.should_show(TTY(), env={"CI": "true"})
    assert not progress.should_show(TTY(), json_out=True, env={})


def test_progress_counts_results_on_disk(tmp_path):
    """Runs finished by any process count; the ETA only from those finished now."""
    ids = ["a", "b", "c"]
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "result.json").write_text("{}")  # done by an earlier invocation
    out = TTY()
    with progress.study_progress(tmp_path, ids, show=True, stream=out, every_s=0.01):
        for rid in ("b", "c"):
            (tmp_path / "runs" / rid).mkdir()
            (tmp_path / "runs" / rid / "result.json").write_text("{}")
            time.sleep(0.05)
    frames = [f for f in re.split(r"\r\n?", out.getvalue().replace("\x1b[K", "")) if f]
    assert frames[0].startswith("runs 1/3 done, 0s elapsed, ETA after the first run")
    assert any(f.startswith("runs 2/3 done") and "ETA " in f and "first run" not in f for f in frames)
    assert frames[-1].startswith("runs 3/3 done") and frames[-1].endswith("all runs done")
    quiet = io.StringIO()
    with progress.study_progress(tmp_path, ids, show=False, stream=quiet):
        pass
    assert quiet.getvalue() == ""


TINY_STUDY = ["reproduce", "--quick", "--layers", "1", "--bias-classes", "100", "--workers", "1", "--device", "cpu",
              "--threads", "1"]


@pytest.mark.parametrize("tty,json_out", [(True, False), (False, False), (True, True)])
def test_reproduce_progress_on_a_terminal_quiet_otherwise(tty, json_out, tmp_path, monkeypatch, capsys):
    d = fakes.fake_data(128, 64)
    monkeypatch.setattr("softmaxlab.mnist.study.load_data", lambda data_dir=None, **kw: d)
    monkeypatch.delenv("CI", raising=False)
    err = TTY() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with pytest.raises(SystemExit) as ei:
        cli.main([*TINY_STUDY, "--out", str(tmp_path / "out"), *(["--json"] if json_out else [])])
    assert ei.value.code == 0
    shown = "runs 3/3 done" in err.getvalue()  # linear, L = 1 and its diagnostic run (the lr extension is off)
    assert shown == (tty and not json_out), err.getvalue()
    stdout = capsys.readouterr().out
    if json_out:
        assert json.loads(stdout)["q1"]["name"] == "linear"
    else:
        assert "Q1 linear" in stdout


# ---- a few cases of the generated campaign through the console script ----------------------------------------


def _subprocess_subset() -> list:
    """For each kind of input, the first case of a command not yet picked that needs neither the patched MNIST
    table nor a fault injected (those run in-process only, tests/test_bad_inputs.py): a few, deterministic."""
    import campaign

    picked, used = [], set()
    for gen in campaign.KINDS.values():
        fits = [c for command, cmd in campaign.commands().items() for c in gen(command, cmd)
                if not c.real_data and c.full_disk_at is None]
        fresh = [c for c in fits if c.command not in used] or fits
        if fresh:
            picked.append(fresh[0])
            used.add(fresh[0].command)
    return picked


@pytest.mark.parametrize("case", _subprocess_subset(), ids=lambda c: c.id)
def test_generated_cases_through_the_console_script(case, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    argv = case.make(tmp_path)
    p = softmaxlab(*argv, env=newcomer_env(home, dead_ports(1)), cwd=tmp_path)
    err = one_error_line(p)
    assert any(n.lower() in err.lower() for n in case.names), (case.names, err)
    assert not [q for q in tmp_path.rglob("*") if q.name in ("result.json", "summary.json", "report.html")]
