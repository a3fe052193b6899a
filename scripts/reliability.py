"""Reliability campaigns: kill `softmaxlab sweep` at random moments, race two sweeps on one --out, feed bad inputs.

    SOFTMAXLAB_DATA=/path/to/mnist python scripts/reliability.py     # writes docs/reliability.md

Everything is seeded (kill moments, kill modes); the figures in docs/reliability.md come from one run of this
script. tests/test_kill.py and tests/test_concurrency.py run smaller campaigns through the same functions.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A tiny sweep: 4 runs (L = 1, 2 x seeds 0, 1), 3 epochs each, a few seconds of training in all.
SWEEP_ARGS = ("--layers", "1-2", "--seeds", "0-1", "--width", "64", "--epochs", "3", "--train-subset", "4096",
              "--eval-subset", "512", "--device", "cpu", "--threads", "1")
# Fields that must be bitwise equal to an uninterrupted sweep (times and provenance may differ).
SAME = ("run_id", "name", "status", "params", "width", "epochs_done", "test_acc", "test_loss", "val_acc",
        "val_loss", "test_errors", "diverged_at", "seed", "layers", "config")
CSV_TIMES = ("wall_time_s", "train_time_s")
TEMP = re.compile(r"(\.tmp\d+|^\.write-probe\d+)$")  # runs.atomic_write, train.save_checkpoint, runs.ensure_dir
DONE = re.compile(r"^done (\S+) seed=(\d+):", re.M)  # study._train_and_record logs this once per run it trains


# `softmaxlab sweep` that SIGKILLs itself at its n-th write. "fsync": inside it, after a temp file's bytes are
# written, before its rename (runs.atomic_write, train.save_checkpoint): a kill that lands inside a write every
# time. "checkpoint": just after the n-th checkpoint.pt rename, so a run is left part-way on disk whatever the
# machine's speed (timed kills on a slow machine can all land in startup or after the short training).
KILL_AT_WRITE = """
import os, signal, sys
where, n, calls = sys.argv[1], int(sys.argv[2]), [0]
real_fsync, real_replace = os.fsync, os.replace
def count():
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
def fsync(fd):
    if where == "fsync":
        count()
    return real_fsync(fd)
def replace(src, dst, **kw):
    real_replace(src, dst, **kw)
    if where == "checkpoint" and os.path.basename(os.fspath(dst)) == "checkpoint.pt":
        count()
os.fsync, os.replace = fsync, replace
from softmaxlab.cli import main
main(sys.argv[3:])
"""

# kill modes that make the sweep kill itself: mode -> (where, largest n)
SELF_KILL = {"in-write": ("fsync", 3), "after-checkpoint": ("checkpoint", 2)}


def sweep_cmd(out: Path, args=SWEEP_ARGS, kill_at: tuple[str, int] | None = None) -> list[str]:
    """The sweep's command line; kill_at=(where, n) makes it SIGKILL itself at its n-th fsync or checkpoint."""
    if kill_at is not None:
        return [sys.executable, "-c", KILL_AT_WRITE, kill_at[0], str(kill_at[1]), "sweep", *args, "--out", str(out)]
    return [sys.executable, "-m", "softmaxlab", "sweep", *args, "--out", str(out)]


def child_env(data_dir: str | None = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # a killed child's log lines are not lost in its buffer
    if data_dir:
        env["SOFTMAXLAB_DATA"] = str(data_dir)
    return env


def start(out: Path, env: dict, args=SWEEP_ARGS, kill_at: tuple[str, int] | None = None) -> subprocess.Popen:
    return subprocess.Popen(sweep_cmd(out, args, kill_at), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def temps(out: Path) -> set[str]:
    """Temp files of in-flight (or killed) atomic writes under out/ and out/runs/*/."""
    found = set()
    for d in (out, *(p for p in (out / "runs").glob("*") if p.is_dir())):
        try:
            with os.scandir(d) as it:
                found.update(str(Path(d) / e.name) for e in it if TEMP.search(e.name))
        except OSError:
            pass
    return found


def planned_runs(args=SWEEP_ARGS) -> int:
    from softmaxlab.mnist.configs import parse_range

    a = dict(zip(args[::2], args[1::2]))
    return len(parse_range(a["--layers"], "layers", 1)) * len(parse_range(a["--seeds"], "seeds", 0))


def progress(out: Path) -> tuple[int, int, bool]:
    """(finished runs, finished epochs, whether some run is part-way: checkpointed but not finished)."""
    runs_done = epochs = 0
    partway = False
    for d in (out / "runs").glob("*"):
        if (d / "result.json").exists():
            runs_done += 1
            epochs += len((read(d / "result.json") or {}).get("history", []))
        elif (d / "checkpoint.pt").exists():
            partway = True
            epochs += len((d / "metrics.jsonl").read_text().splitlines()) if (d / "metrics.jsonl").exists() else 0
    return runs_done, epochs, partway


def phase(out: Path, since: float, old_temps: set[str], planned: int) -> str:
    """Where a sweep started at `since` (time.time()) was when it was killed, from what it had written."""
    files = [p for p in out.rglob("*") if p.is_file() and not TEMP.search(p.name)]
    if not any(p.stat().st_mtime >= since for p in files if p.name != "lock") and not temps(out) - old_temps:
        return "startup: imports, data load (nothing written yet)"
    if sum(p.name == "result.json" for p in files) >= planned:
        return "finishing: results.csv, summary.json"
    return "inside a run: model setup, epochs, checkpoints, metrics.jsonl, result.json"


def run_to_end(out: Path, env: dict, args=SWEEP_ARGS, timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run(sweep_cmd(out, args), capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"sweep --out {out} exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


# ---- checking a finished --out against an uninterrupted one ---------------------------------------------------


def read(path: Path):
    """Parsed JSON, or None if missing or corrupt (verify reports corrupt files separately)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_results(out: Path) -> dict[str, dict]:
    found = {p.parent.name: read(p) for p in sorted((out / "runs").glob("*/result.json"))}
    return {k: v for k, v in found.items() if v is not None}


def same_part(res: dict) -> dict:
    d = {k: res.get(k) for k in SAME}
    d["history"] = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in res["history"]]
    return d


def verify(out: Path, ref: Path) -> dict:
    """Every planned run has exactly one complete result equal to the reference's; no partial or stray files."""
    problems: list[str] = []
    want = load_results(ref)
    for p in out.rglob("*.json"):  # no partial or corrupt JSON anywhere
        try:
            json.loads(p.read_text())
        except ValueError as e:
            problems.append(f"{p}: corrupt JSON ({e})")
    have = load_results(out)
    lost = sorted(set(want) - set(have))
    problems += [f"run {r}: no result" for r in lost]
    problems += [f"run {r}: not planned" for r in sorted(set(have) - set(want))]
    mismatched = [r for r in sorted(set(want) & set(have)) if same_part(have[r]) != same_part(want[r])]
    problems += [f"run {r}: result differs from the uninterrupted sweep" for r in mismatched]
    for r, res in have.items():
        try:
            hist = [json.loads(x) for x in (out / "runs" / r / "metrics.jsonl").read_text().splitlines()]
        except (OSError, ValueError):
            hist = None
        if hist != res["history"]:
            problems.append(f"run {r}: metrics.jsonl ({len(hist)} epochs) disagrees with result.json")
    rows = list(csv.DictReader((out / "results.csv").open())) if (out / "results.csv").exists() else []
    ids = [r["run_id"] for r in rows]
    dupes = len(ids) - len(set(ids))
    if dupes:
        problems.append(f"results.csv: {dupes} duplicate rows")
    ref_rows = list(csv.DictReader((ref / "results.csv").open()))
    strip = lambda rs: [{k: v for k, v in r.items() if k not in CSV_TIMES} for r in rs]
    if strip(rows) != strip(ref_rows):
        problems.append("results.csv differs from the uninterrupted sweep's")
    s, s_ref = ((read(d / "summary.json") or {}).get("rows") for d in (out, ref))
    if s != s_ref:
        problems.append("summary.json rows differ from the uninterrupted sweep's")
    left = temps(out)
    if left:
        problems.append(f"{len(left)} temp files left: {sorted(left)[:3]}")
    return dict(planned=len(want), complete=len(set(want) & set(have)), lost=len(lost), duplicates=dupes,
                mismatched=len(mismatched), problems=problems)


def workers_here() -> int:
    from softmaxlab.mnist.runner import cpu_count

    return min(cpu_count(), planned_runs(SWEEP_ARGS))


# ---- 1. kills -------------------------------------------------------------------------------------------------


MODES = ("time", "in-write", "time", "after-checkpoint", "time", "watch")  # cycled over the attempts


def kill_campaign(work: Path, kills: int = 20, seed: int = 0, lo: float = 0.3, hi: float = 3.0,
                  env: dict | None = None, args=SWEEP_ARGS, modes=MODES, log=print) -> dict:
    """SIGKILL a sweep `kills` times at seeded random moments, restarting it each time; then check the records.

    Attempts cycle through `modes`: "time" kills after a random delay in [lo, hi] s; "watch" kills on sight of
    the n-th new temp file (n random in 1..4); "in-write" makes the sweep SIGKILL itself inside its n-th fsync
    (n random in 1..3), between writing a temp file and renaming it; "after-checkpoint" makes it SIGKILL itself
    just after its n-th checkpoint (n random in 1..2), leaving a run part-way for the next attempt to resume.
    When a sweep finishes before the kills are spent, a new round starts in a fresh --out. Every round is
    checked against an uninterrupted sweep.
    """
    env = env or child_env()
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ref = work / "uninterrupted"
    shutil.rmtree(ref, ignore_errors=True)
    ref_proc = start(ref, env, args)  # the reference runs alongside the first kills
    done, in_write, restarts, rounds, resumes, epochs_killed = 0, 0, 0, [], 0, 0
    phases, by_mode = collections.Counter(), collections.Counter()
    planned = planned_runs(args)
    out = work / f"killed-{len(rounds)}"
    shutil.rmtree(out, ignore_errors=True)
    while done < kills:
        mode = modes[restarts % len(modes)]
        n = rng.randint(1, SELF_KILL[mode][1] if mode in SELF_KILL else 4)  # a resumed sweep has few writes left
        delay = rng.uniform(lo, hi)
        before, since = temps(out), time.time()
        _, epochs_before, partway = progress(out)
        resumes += partway  # this attempt starts by resuming a run from its checkpoint
        p = start(out, env, args, kill_at=(SELF_KILL[mode][0], n) if mode in SELF_KILL else None)
        restarts += 1
        deadline = time.monotonic() + (delay if mode == "time" else 300)
        seen: set[str] = set()
        while p.poll() is None and time.monotonic() < deadline:
            if mode == "watch":
                seen |= temps(out) - before
                if len(seen) >= n:
                    break
                time.sleep(0.0005)
            else:
                time.sleep(0.002)
        where = phase(out, since, before, planned)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        _, err = p.communicate()
        if p.returncode == -signal.SIGKILL:
            done += 1
            by_mode[mode] += 1
            phases[where] += 1
            in_write += bool(temps(out) - before)  # it left a temp file: the kill landed inside a write
            continue
        if p.returncode != 0:
            raise RuntimeError(f"sweep exited {p.returncode} after {done} kills: {err.strip()[-2000:]}")
        rounds.append(out)  # this round finished: check it later, go on in a fresh --out
        epochs_killed += epochs_before  # finished by processes that were then killed
        out = work / f"killed-{len(rounds)}"
        shutil.rmtree(out, ignore_errors=True)
    epochs_killed += progress(out)[1]  # epochs finished by processes that were then killed
    resumes += progress(out)[2]
    run_to_end(out, env, args)  # the last restart, left alone
    rounds.append(out)
    _, err = ref_proc.communicate(timeout=300)
    if ref_proc.returncode != 0:
        raise RuntimeError(f"uninterrupted sweep failed: {err.strip()[-2000:]}")
    checks = [verify(r, ref) for r in rounds]
    res = dict(kills=done, kills_in_write=in_write, by_mode=dict(by_mode), by_phase=dict(phases), delays=(lo, hi),
               restarts=restarts + 1, rounds=len(rounds), resumes=resumes, epochs_between_kills=epochs_killed,
               epochs_planned=len(rounds) * planned * int(dict(zip(args[::2], args[1::2]))["--epochs"]),
               planned=sum(c["planned"] for c in checks), complete=sum(c["complete"] for c in checks),
               lost=sum(c["lost"] for c in checks), duplicates=sum(c["duplicates"] for c in checks),
               mismatched=sum(c["mismatched"] for c in checks),
               problems=[p for c in checks for p in c["problems"]], seconds=time.perf_counter() - t0)
    log(f"kills: {res}")
    return res


# ---- 2. two sweeps on one --out --------------------------------------------------------------------------------


def trained(stdouts: list[str]) -> collections.Counter:
    """How many times each run was trained to the end, from the `done <name> seed=<s>:` lines of all processes."""
    return collections.Counter(m for s in stdouts for m in DONE.findall(s))


def concurrency_campaign(work: Path, ref: Path, pairs: int = 3, seed: int = 0, env: dict | None = None,
                         args=SWEEP_ARGS, log=print) -> dict:
    """Race two sweeps on one --out `pairs` times, plainly and with one of them SIGKILLed mid-way.

    Each run must be trained exactly once over all processes (a dead holder's lock is dropped by the kernel,
    so the survivor takes over its run from the last checkpoint), and the records must equal `ref`'s, an
    uninterrupted sweep (made here, alongside the races, if `ref` holds none).
    """
    env = env or child_env()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    res = dict(races=0, races_with_kill=0, processes=0, runs=0, trained_twice=0, never_trained=0, lost=0,
               mismatched=0, problems=[])
    n_runs = planned_runs(args)
    ref_proc = None if (ref / "results.csv").exists() else start(ref, env, args)
    finished = []
    for i in range(pairs):
        for with_kill in (False, True):
            out = work / f"race-{i}-{'kill' if with_kill else 'plain'}"
            shutil.rmtree(out, ignore_errors=True)
            a, b = start(out, env, args), start(out, env, args)
            res["processes"] += 2
            if with_kill:
                time.sleep(rng.uniform(1.5, 3.0))  # past startup, inside training (most of the time)
                a.send_signal(signal.SIGKILL)
            outs = [a.communicate(timeout=300), b.communicate(timeout=300)]
            if b.returncode != 0 or (not with_kill and a.returncode != 0):
                res["problems"].append(f"race {i}: exit codes {a.returncode}, {b.returncode}: {outs[1][1][-500:]}")
            stdouts = [o[0] for o in outs]
            if with_kill:  # the killed one, restarted, must find everything done and train nothing
                again = run_to_end(out, env, args)
                res["processes"] += 1
                stdouts.append(again.stdout)
            count = trained(stdouts)
            res["races"] += 1
            res["races_with_kill"] += with_kill
            res["runs"] += n_runs
            res["trained_twice"] += sum(1 for c in count.values() if c > 1)
            res["never_trained"] += n_runs - len(count)
            if sum(1 for c in count.values() if c > 1):
                res["problems"].append(f"race {i}: runs trained twice: {dict(count)}")
            finished.append(out)
    if ref_proc is not None:
        _, err = ref_proc.communicate(timeout=300)
        if ref_proc.returncode != 0:
            raise RuntimeError(f"uninterrupted sweep failed: {err.strip()[-2000:]}")
    for out in finished:
        v = verify(out, ref)
        res["lost"] += v["lost"]
        res["mismatched"] += v["mismatched"]
        res["problems"] += v["problems"]
    res["seconds"] = time.perf_counter() - t0
    log(f"concurrency: {res}")
    return res


# ---- 3. bad inputs (tests/test_bad_inputs.py, tests/test_config.py) -------------------------------------------


NUMERICAL = ("test_divergence", "test_logits")  # tests/test_bad_inputs.py's numerical-fault tests
# ... and its tests of valid inputs that must be accepted: the campaign's base invocations, two decided inputs
ACCEPTED = ("test_every_command_has_cases", "test_k_at_least_c", "test_zero_probabilities")


def pytest_cases(*files: str, env: dict | None = None) -> list[tuple[str, str]]:
    """Run pytest on `files`; (test id, outcome) per case, from its JUnit XML. A failure that is not an assertion
    (an exception escaped the CLI) or whose text holds a traceback counts as outcome "traceback"."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"]
        subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
        cases = []
        for c in ET.parse(xml).getroot().iter("testcase"):
            tags = {ch.tag: ch for ch in c}
            if "failure" in tags or "error" in tags:
                f = tags.get("failure", tags.get("error"))
                text = (f.get("message") or "") + (f.text or "")
                outcome = "failed" if text.startswith("AssertionError") and "Traceback" not in text else "traceback"
            elif "skipped" in tags:
                outcome = "xfailed" if "xfail" in (tags["skipped"].get("type") or "") else "skipped"
            else:
                outcome = "passed"
            cases.append((c.get("name"), outcome))
    return cases


GENERATED = "test_generated_bad_input["  # tests/test_bad_inputs.py's test of the generated campaign
KIND_NAMES = {"option": "option values", "data": "MNIST files", "config": "config files", "output": "output"}


def by_command(cases) -> list[dict]:
    """The generated campaign's outcomes per command and kind of input (tests/campaign.py maps ids to cases)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import campaign

    kind_of = {c.id: k for k, gen in campaign.KINDS.items() for cmd, cl in campaign.commands().items()
               for c in gen(cmd, cl)}
    rows: dict[str, dict] = {cmd: dict(command=cmd, total=0, passed=0, traceback=0, **dict.fromkeys(KIND_NAMES, 0))
                             for cmd in campaign.commands()}
    for name, outcome in cases:
        if not name.startswith(GENERATED):
            continue
        cid = name[len(GENERATED):-1]
        r = rows[cid.split("|", 1)[0]]
        r[kind_of[cid]] += 1
        r["total"] += 1
        r["passed"] += outcome == "passed"
        r["traceback"] += outcome == "traceback"
    return list(rows.values())


def tally(cases, keep=lambda name: True) -> dict:
    out = collections.Counter(outcome for name, outcome in cases if keep(name))
    out["xfail_ids"] = [name for name, outcome in cases if keep(name) and outcome == "xfailed"]
    return dict(out)


# ---- the report -----------------------------------------------------------------------------------------------


def write_doc(path: Path, kill: dict, conc: dict, bad: dict, num: dict, acc: dict, conf: dict, gen: list[dict],
              argv: list[str], seconds: float) -> None:
    import torch

    from softmaxlab.mnist.records import cpu_model

    cmd = "SOFTMAXLAB_DATA=/path/to/mnist python scripts/reliability.py " + " ".join(argv)
    lost = kill["lost"] + conc["lost"]
    modes = kill["by_mode"]
    xfails = bad.get("xfail_ids", [])
    lines = [
        "# Reliability figures",
        "",
        "<!-- Generated by scripts/reliability.py: do not edit by hand, re-run the command below. -->",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, torch "
        f"{torch.__version__}; {seconds:.0f} s in all. Kill moments and modes are seeded (`--seed`); the wall-clock "
        "landing of a timed kill is not, so the per-phase split varies a little from run to run, the checks do not.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| kills survived (SIGKILL of `softmaxlab sweep`, then a restart) | {kill['kills']} |",
        f"| ... of which landed inside an atomic write (left a temp file behind) | {kill['kills_in_write']} |",
        f"| races of two sweeps on one `--out` (of which with a SIGKILL) | {conc['races']} "
        f"({conc['races_with_kill']}) |",
        f"| runs trained twice by racing sweeps | {conc['trained_twice']} |",
        f"| bad inputs tried (each: one-line error, exit 2, nothing written that passes for a result) | "
        f"{bad.get('passed', 0)} |",
        f"| ... of which generated: every command x every bad shape of each input it reads | "
        f"{sum(r['passed'] for r in gen)} of {sum(r['total'] for r in gen)} |",
        f"| tracebacks | {sum(r['traceback'] for r in gen) + bad.get('traceback', 0)} |",
        f"| numerical-fault cases (divergence recorded at its step, logits +/- 1e4 finite) | {num.get('passed', 0)} |",
        f"| config-loader cases incl. hypothesis fuzzing (random bytes -> only SoftmaxlabError) | "
        f"{conf.get('passed', 0)} |",
        f"| **results lost** | **{lost}** |",
        "",
        "## 1. Kills",
        "",
        f"`softmaxlab sweep {' '.join(SWEEP_ARGS)} --out DIR` (4 runs of 3 epochs) was started "
        f"{kill['restarts']} times and SIGKILLed {kill['kills']} times, restarted after each kill. The sweep trains "
        f"with its default of one process per core ({workers_here()} here): a kill of the sweep takes its helper "
        f"process down with it (PR_SET_PDEATHSIG), so each kill interrupts every run in training at that moment:",
        "",
        f"- {modes.get('time', 0)} kills after a random delay (uniform in [{kill['delays'][0]}, {kill['delays'][1]}] "
        "s from the start of the process);",
        f"- {modes.get('watch', 0)} kills on sight of the n-th new temp file of an atomic write (n random in 1..4);",
        f"- {modes.get('in-write', 0)} kills from inside the sweep's n-th `fsync` (n random in 1..3): after a temp "
        "file's bytes are written, before its rename; a SIGKILL the process sends itself, so it always lands "
        "inside a write;",
        f"- {modes.get('after-checkpoint', 0)} kills from just after the sweep's n-th checkpoint rename (n random "
        "in 1..2): a run is then part-way on disk whatever the machine's speed, and the restart must resume it.",
        "",
        f"When a sweep finished before the kills were spent, a new round began in a fresh `--out` "
        f"({kill['rounds']} round(s)). Of the {kill['epochs_planned']} epochs trained in all, "
        f"{kill['epochs_between_kills']} were finished by processes that were later killed (the rest by the restart "
        f"that completed each round); {kill['resumes']} restarts began by resuming a run from its checkpoint.",
        "",
        "| where the kill landed | kills |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(kill["by_phase"].items())],
        "",
        "Each round's records were then compared with an uninterrupted sweep of the same config:",
        "",
        "| check | result |",
        "|---|---|",
        f"| planned runs with exactly one complete result.json | {kill['complete']} / {kill['planned']} |",
        f"| results lost | {kill['lost']} |",
        f"| results not bitwise equal to the uninterrupted sweep's (accuracies, losses, per-epoch history, "
        f"misclassified test images) | {kill['mismatched']} |",
        f"| duplicate rows in results.csv | {kill['duplicates']} |",
        f"| other problems (corrupt JSON, metrics.jsonl out of step with result.json, stray temp files, "
        f"summary.json differs) | {len(kill['problems'])} |",
        "",
        "## 2. Concurrency",
        "",
        f"Two `softmaxlab sweep` processes were started together on one `--out`, {conc['races']} times; in "
        f"{conc['races_with_kill']} of the races one of them was SIGKILLed mid-way (the survivor takes over the "
        "run it held: an fcntl lock dies with its holder, no stale lock is left) and then restarted. Who trained "
        "what is read from the `done ...` line each process prints for a run it trains to the end.",
        "",
        "| check | result |",
        "|---|---|",
        f"| processes | {conc['processes']} |",
        f"| runs (over all races) | {conc['runs']} |",
        f"| runs trained twice | {conc['trained_twice']} |",
        f"| runs never trained | {conc['never_trained']} |",
        f"| results lost / not equal to the uninterrupted sweep's | {conc['lost']} / {conc['mismatched']} |",
        f"| other problems | {len(conc['problems'])} |",
        "",
        "## 3. Bad inputs, numerical faults, the config loader",
        "",
        "`python -m pytest tests/test_bad_inputs.py` runs the generated campaign of `tests/campaign.py`, all of it: "
        "every command of the CLI (read from the typer app, so a new command joins by itself) x every bad shape "
        "of each input the command reads. Option values: empty, wrong type, out of range (more for numbers), a "
        "value given to a flag. MNIST files (each of the four): missing, empty, truncated at several points (raw "
        "and gzip), random bytes, the right size with a wrong checksum, a gzip of the wrong file or of a text "
        "file, trailing bytes, a folder where the file should be; the data dir empty, absent, a file, read-only. "
        "Config files: missing, a folder, broken TOML, not UTF-8, too big, an unknown key, and every key with a "
        "wrong type (and out of range, for numbers). Output: `--out` a file, inside a file, read-only, empty, the "
        "disk full at the first write and at result.json; `--plot` likewise. Each case must end as one `error:` "
        "line naming the input (at most 3 lines on stderr, the error last), exit code 2, no traceback, no "
        "result.json / results.csv / summary.json / report.html written or changed, the data dir untouched.",
        "",
        "| command | option values | MNIST files | config files | output | cases | passed | tracebacks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| `{r['command']}` | {r['option']} | {r['data']} | {r['config']} | {r['output']} | {r['total']} | "
          f"{r['passed']} | {r['traceback']} |" for r in gen],
        f"| **all** | {sum(r['option'] for r in gen)} | {sum(r['data'] for r in gen)} | "
        f"{sum(r['config'] for r in gen)} | {sum(r['output'] for r in gen)} | **{sum(r['total'] for r in gen)}** | "
        f"{sum(r['passed'] for r in gen)} | **{sum(r['traceback'] for r in gen)}** |",
        "",
        "The same file holds hand-written rows for what a shape cannot express, and the wording of particular "
        "messages: option values and config files whose error must name the fix, another study in `--out`, the "
        "disk filling up during each kind of write, a download that fails its checksum, unreadable or malicious "
        "checkpoints, bad tensors and options of the maths API. `tests/test_newcomer.py` runs `data check` on "
        "damaged real MNIST files and `reproduce` offline through the console script.",
        "",
        f"- bad inputs, generated and hand-written: {_counts(bad)}",
        f"- numerical faults: {_counts(num)}",
        f"- valid inputs that must be accepted (each command's base invocation, which every generated case spoils; "
        f"K >= C drawn with replacement; a proposal with zero probabilities): {_counts(acc)}",
        f"- `python -m pytest tests/test_config.py` (unknown keys, wrong types, hypothesis fuzzing): {_counts(conf)}",
        "",
    ]
    if xfails:
        lines += ["Expected failures (to be decided: make them pass or test them as accepted):", "",
                  *[f"- `{x}`" for x in xfails], ""]
    problems = kill["problems"] + conc["problems"]
    if problems:
        lines += ["## Problems found", "", *[f"- {p}" for p in problems], ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _counts(c: dict) -> str:
    keys = ("passed", "xfailed", "skipped", "failed", "traceback")
    return ", ".join(f"{c[k]} {k}" for k in keys if c.get(k)) or "none run"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=40, help="SIGKILLs of the kill campaign (>= 20).")
    ap.add_argument("--races", type=int, default=3, help="Pairs of races (plain, with a kill) of two sweeps.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temp folder).")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "reliability.md")
    a = ap.parse_args(argv)
    if not os.environ.get("SOFTMAXLAB_DATA"):
        print("error: set SOFTMAXLAB_DATA to the folder with the MNIST files", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    work = a.work or Path(tempfile.mkdtemp(prefix="softmaxlab-reliability-"))
    try:
        kill = kill_campaign(work / "kill", kills=a.kills, seed=a.seed)
        conc = concurrency_campaign(work / "race", work / "kill" / "uninterrupted", pairs=a.races, seed=a.seed)
        cases = pytest_cases("tests/test_bad_inputs.py")
        bad = tally(cases, lambda n: not n.startswith(NUMERICAL + ACCEPTED))
        num = tally(cases, lambda n: n.startswith(NUMERICAL))
        acc = tally(cases, lambda n: n.startswith(ACCEPTED))
        conf = tally(pytest_cases("tests/test_config.py"))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    argv = [f"--kills {a.kills}", f"--races {a.races}", f"--seed {a.seed}"]
    write_doc(a.doc, kill, conc, bad, num, acc, conf, by_command(cases), argv, time.perf_counter() - t0)
    print(f"wrote {a.doc}")
    ok = not (kill["problems"] or conc["problems"]
              or any(c.get("failed") or c.get("traceback") for c in (bad, num, acc, conf)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
