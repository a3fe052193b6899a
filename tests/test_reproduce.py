"""The main job end to end: `softmaxlab reproduce --quick` through the real CLI, then interrupted and resumed."""

import json
import os
import signal
import subprocess
import sys

import pytest

from softmaxlab.report.pdf import find_chromium

pytestmark = pytest.mark.slow


def reproduce(out, mnist_dir, *extra):
    p = subprocess.run([sys.executable, "-m", "softmaxlab", "reproduce", "--quick", "--tune-lrs", "0.01,0.03,0.1",
                        "--out", str(out),
                        "--data-dir", str(mnist_dir), *extra], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    return p


PDF = find_chromium() is not None or os.environ.get("CI") == "true"  # under CI Chromium must be there


@pytest.fixture(scope="module")
def quick(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    return out, reproduce(out, mnist_dir, *(["--pdf"] if PDF else []))


def test_quick_answers_every_question(quick):
    out, p = quick
    for f in ("report.html", "report.md", "results.csv", "summary.json", "config.json", "problem1.json",
              *(["report.pdf"] if PDF else [])):
        assert (out / f).is_file(), f
    for fig in ("accuracy_vs_layers", "learning_curves", "params_vs_layers", "bias_vs_k", "misclassified"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
        assert (out / "figures" / f"{fig}.svg").is_file()
    s = json.loads((out / "summary.json").read_text())
    assert s["q1"]["name"] == "linear" and s["q2"]["params"] == 814_090
    assert [r["width"] for r in s["q3"]] == [1024, 588, 469, 405, 362, 331, 308, 289]
    assert [r["layers"] for r in s["q4"]] == list(range(1, 9)) and s["q4_fixed"] is None
    assert all(r["ok"] for r in s["problem1"]["gradcheck"])
    assert len(s["runs"]) == 9  # the protocol's: Q2 and Q4's L = 1 are one run
    # --quick's diagnostic runs (L = 1, 4, 8; the 1 x 1 swap grid is their L = 8 run) and its 2-lr extension
    assert [(c["layers"], c["seed"]) for c in s["loss_curves"]] == [(1, 0), (4, 0), (8, 0)] and s["swap"] is None
    assert [t["lrs"] for t in s["tuned"]] == [[0.01, 0.03]] * 8 and len(s["extension_runs"]) == 3 + 8
    for fig in ("loss_curves", "deep_diagnostics"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000
    assert "Q1 linear" in p.stdout and "report:" in p.stdout
    done = [line.split(":")[0] for line in p.stdout.splitlines() if line.startswith("done ")]
    assert len(done) == 20 and len(set(done)) == 20, done  # a diagnostic or extension run says which it is
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 21 and len(set(csv)) == 21


def test_interrupted_study_resumes_to_the_same_report(quick, mnist_dir):
    out, _ = quick
    before = (out / "report.md").read_bytes(), (out / "summary.json").read_bytes()
    # As if killed mid-study: one run's result and the report are gone, its checkpoint is left.
    victim = next((out / "runs").glob("*/result.json"))
    victim.unlink()
    for f in ("report.md", "report.html", "summary.json"):
        (out / f).unlink()
    p = reproduce(out, mnist_dir)
    assert p.stdout.count("done ") == 1  # only the lost run trained again
    tables = lambda md: [ln for ln in md.decode().splitlines() if ln.startswith("| Q") or "±" in ln]
    assert tables((out / "report.md").read_bytes()) == tables(before[0]) != []
    s_before, s_after = json.loads(before[1]), json.loads((out / "summary.json").read_text())
    for q in ("q1", "q2"):
        assert s_after[q]["test_acc_mean"] == s_before[q]["test_acc_mean"]
    assert [r["test_acc_mean"] for r in s_after["q4"]] == [r["test_acc_mean"] for r in s_before["q4"]]


def test_other_protocol_in_same_out_is_refused(quick, mnist_dir):
    out, _ = quick
    p = subprocess.run([sys.executable, "-m", "softmaxlab", "reproduce", "--quick", "--lr", "0.1", "--out", str(out),
                        "--data-dir", str(mnist_dir)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "different study" in p.stderr and "Traceback" not in p.stderr


def test_ctrl_c_says_so_in_one_line_and_the_rerun_resumes(mnist_dir, tmp_path):
    """SIGINT once the first run is done: exit 130 and the one `interrupted:` line on stderr (typer turns Ctrl-C
    into exit code 130 before our handler sees it, which had dropped the line; a killed helper's tqdm lock
    had added the resource tracker's warning); then the same command trains only what was left."""
    cmd = [sys.executable, "-m", "softmaxlab", "reproduce", "--quick", "--no-diagnose", "--out", str(tmp_path),
           "--data-dir", str(mnist_dir)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    next(line for line in p.stdout if line.startswith("done "))
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err == ("interrupted: finished epochs and runs are saved; re-run the same "
                                           "command to resume\n"), err
    trained = len(list(tmp_path.glob("runs/*/result.json")))  # not the done lines: a helper may die before its own
    assert 1 <= trained < 9
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done ") == 9 - trained
