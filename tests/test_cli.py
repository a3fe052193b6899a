"""The real CLI through a subprocess, with tiny budgets."""

import json
import os
import subprocess
import sys

import pytest


def cli(*args, env=None, check=False):
    e = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "softmaxlab", *args], capture_output=True, text=True, env=e,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"softmaxlab {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def assert_one_line_error(p, *words):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_version_and_help():
    assert cli("--version", check=True).stdout.startswith("softmaxlab ")
    out = cli("--help", check=True).stdout
    for cmd in ("reproduce", "train", "sweep", "params", "data", "sampled"):
        assert cmd in out


def test_params_prints_the_q3_table():
    out = cli("params", check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[2]) for r in rows] == [1024, 588, 469, 405, 362, 331, 308, 289]
    data = json.loads(cli("params", "--layers", "1-3", "--budget", "100000", "--json", check=True).stdout)
    assert [r["layers"] for r in data] == [1, 2, 3]


@pytest.mark.parametrize("args,words", [
    (["params", "--layers", "0"], ["layers"]),
    (["params", "--budget", "100"], ["budget", "too small"]),
    (["params", "--budget", "x"], ["--budget"]),
    (["train", "--layers", "0"], ["layers"]),
    (["train", "--width", "0"], ["width"]),
    (["train", "--width", "wide"], ["--width"]),
    (["train", "--epochs", "-1"], ["epochs"]),
    (["train", "--epochs", "1.5"], ["--epochs"]),
    (["train", "--batch-size", "0"], ["batch_size"]),
    (["train", "--lr", "0"], ["lr"]),
    (["train", "--lr", "nan"], ["lr"]),
    (["train", "--model", "cnn"], ["model"]),
    (["train", "--nope"], ["--nope"]),
    (["sweep", "--layers", "a-b"], ["layers"]),
    (["nonsense"], ["nonsense"]),
])
def test_bad_arguments_exit_2_with_one_line(args, words, tmp_path):
    assert_one_line_error(cli(*args, env={"SOFTMAXLAB_DATA": str(tmp_path)}), *words)


def test_missing_data_is_a_clear_error(tmp_path):
    p = cli("train", "--epochs", "1", "--data-dir", str(tmp_path), env={"SOFTMAXLAB_MNIST_MIRRORS": "http://127.0.0.1:9/"})
    assert_one_line_error(p)
    assert str(tmp_path) in p.stderr


def test_data_check(mnist_dir):
    out = cli("data", "check", "--data-dir", str(mnist_dir), check=True).stdout
    assert out.count("ok ") == 4 and "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db" in out


def test_train_json(mnist_dir):
    p = cli("train", "--model", "linear", "--epochs", "1", "--train-subset", "2000", "--eval-subset", "500",
            "--lr", "0.1", "--json", "--data-dir", str(mnist_dir), check=True)
    res = json.loads(p.stdout)
    assert res["status"] == "ok" and res["params"] == 7850 and 0.5 < res["test_acc"] <= 1
    assert res["git_commit"] and res["versions"]["torch"]


def test_train_bf16_says_how_it_ran(mnist_dir):
    """bf16 records whether its GEMMs were bf16 or emulated; where emulated, stderr says so in one line."""
    from softmaxlab.mnist.engine import bf16_gemm

    p = cli("train", "--layers", "1", "--width", "32", "--epochs", "1", "--train-subset", "640", "--eval-subset",
            "200", "--precision", "bf16", "--device", "cpu", "--json", "--data-dir", str(mnist_dir), check=True)
    res = json.loads(p.stdout)
    assert res["status"] == "ok" and res["config"]["precision"] == "bf16" and res["bf16_gemm"] == bf16_gemm("cpu")
    notes = [ln for ln in p.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == (res["bf16_gemm"] == "emulated") and "Traceback" not in p.stderr


def test_sweep_records_and_resumes(mnist_dir, tmp_path):
    args = ["sweep", "--layers", "1-2", "--seeds", "0-1", "--width", "16", "--epochs", "1", "--train-subset", "500",
            "--eval-subset", "200", "--out", str(tmp_path), "--data-dir", str(mnist_dir)]
    first = cli(*args, check=True)
    assert "mlp-L1-k16" in first.stdout and "mlp-L2-k16" in first.stdout
    results = sorted(tmp_path.glob("runs/*/result.json"))
    assert len(results) == 4
    for r in results:
        for f in ("config.json", "metrics.jsonl", "checkpoint.pt"):
            assert (r.parent / f).exists()
        rec = json.loads(r.read_text())
        assert rec["status"] == "ok" and rec["seed"] in (0, 1) and rec["wall_time_s"] > 0
    mtimes = [r.stat().st_mtime_ns for r in results]
    second = cli(*args, check=True)
    assert "done " not in second.stdout and second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    assert [r.stat().st_mtime_ns for r in results] == mtimes  # nothing retrained
    csv = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert len(csv) == 5 and csv[0].startswith("run_id,")
    other = cli(*(args[:-4] + ["--lr", "0.5", "--out", str(tmp_path), "--data-dir", str(mnist_dir)]))
    assert_one_line_error(other, "different study")


@pytest.mark.parametrize("args,says", [
    (["reproduce", "--quick"], "re-run the same command to resume"),
    (["sweep", "--layers", "1"], "re-run the same command to resume"),
    (["train", "--out", "d"], "re-run the same command to resume"),
    (["train", "--out=d"], "re-run the same command to resume"),
    (["train"], "nothing was recorded; pass --out DIR"),
    (["sampled", "bias"], "interrupted"),
])
def test_ctrl_c_line_says_what_was_kept(args, says):
    """Only commands that keep records promise a resume (tests/test_reproduce.py sends the real SIGINT)."""
    from softmaxlab.cli import _interrupted

    line = _interrupted(args)
    assert line.startswith("interrupted") and says in line and ("resume" in line) == ("resume" in says)
