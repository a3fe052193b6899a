"""Bad inputs: a one-line `error:` that names the problem and the fix, exit code 2, no traceback, and nothing
written that could pass for a result. Also numerical faults (divergence, extreme logits) and safe checkpoint
loading.

Section 0 runs the generated campaign (tests/campaign.py: every command x every bad shape of each input it
reads), all of it; sections 1-7 are hand-written rows that check the wording of particular messages and the
cases a shape cannot express (another study in --out, each kind of write failing, a poisoned download or
checkpoint, the maths API). CLI rows run `softmaxlab.cli.main` in-process (the same code as the console script,
minus ~1.5 s of startup per row) on small synthetic data, so none of them needs MNIST; tests/test_newcomer.py
runs a few through the console script. scripts/reliability.py counts these rows for docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import http.server
import json
import os
import re
import threading
from pathlib import Path

import campaign
import fakes
import numpy as np
import pytest
import torch

from softmaxlab import cli
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist import data
from softmaxlab.mnist import records as runs
from softmaxlab.mnist.configs import TrainConfig
from softmaxlab.mnist.data import Data, Split
from softmaxlab.mnist.records import load_checkpoint
from softmaxlab.mnist.train import train

RESULT_FILES = ("result.json", "results.csv", "summary.json", "report.html", "problem1.json")
TINY = ["--width", "8", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--threads", "1"]


def fake_data(n: int = 128) -> Data:
    return fakes.fake_data(n, 64)


@pytest.fixture
def fake(monkeypatch):
    """The CLI's data loader returns small synthetic data (rows that are not about the MNIST files)."""
    d = fake_data()
    monkeypatch.setattr("softmaxlab.mnist.study.load_data", lambda data_dir=None, **kw: d)
    return d


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs if d.exists() for p in sorted(d.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    err = capsys.readouterr().err
    return ei.value.code, err


def assert_clean_error(code: int, err: str, needles, before: dict, *dirs: Path, finished=()) -> str:
    """Exit 2, one line `error: ...` holding every needle, no traceback; no result file new or changed (but the
    names in `finished`: results of runs that completed before the failure), no temp file left, JSON whole."""
    assert code == 2, (code, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for s in needles:
        assert s in lines[0], (s, lines[0])
    after = snapshot(*dirs)
    for path, blob in after.items():
        name = Path(path).name
        assert not runs._TEMP.search(name), f"temp file left: {path}"
        if name in RESULT_FILES and name not in finished:
            assert before.get(path) == blob, f"{path} was written by a failing command"
        if name.endswith(".json"):
            json.loads(blob)
    return lines[0]


# ---- 0. the generated campaign ------------------------------------------------------------------------------

CASES = campaign.generate()
DEAD_MIRROR = "http://127.0.0.1:9/"  # the discard port: connection refused, no real network


def _campaign_env(tmp_path, monkeypatch, real_data: bool):
    monkeypatch.chdir(tmp_path)  # a command that wrongly went ahead would write its default --out here
    for var in ("SOFTMAXLAB_DATA", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SOFTMAXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOFTMAXLAB_MNIST_MIRRORS", DEAD_MIRROR)
    if real_data:
        monkeypatch.setattr(data, "MNIST_FILES", campaign.files_table(campaign.small_mnist()))
    else:
        d = fake_data()
        monkeypatch.setattr("softmaxlab.mnist.study.load_data", lambda data_dir=None, **kw: d)


def _fill_disk_at(at: str, under: Path, monkeypatch) -> list[str]:
    """The first fsync of a file under `under` (at='first') or of the file named `at` fails with ENOSPC."""
    real_fsync, hit = os.fsync, []

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not hit and path.startswith(str(under)) and (at == "first" or _target_of(path) == at):
            hit.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return hit


def _writable_again(tmp_path: Path):
    for p in [tmp_path, *tmp_path.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_generated_bad_input(case, tmp_path, capsys, monkeypatch):
    """One `error:` line (at most a few lines on stderr, the error last) that names the input, exit 2, no
    traceback, nothing under the folder that passes for a result, the data dir untouched."""
    _campaign_env(tmp_path, monkeypatch, case.real_data)
    argv = case.make(tmp_path)
    hit = _fill_disk_at(case.full_disk_at, tmp_path / "out", monkeypatch) if case.full_disk_at else None
    before = snapshot(tmp_path)
    try:
        code, err = run_cli(argv, capsys)
    finally:
        _writable_again(tmp_path)
    assert code == 2, (code, err)
    lines = [ln for ln in err.strip("\n").split("\n") if ln.strip()]
    assert "Traceback" not in err and 1 <= len(lines) <= 3, err
    assert lines[-1].startswith("error: ") and not any(ln.startswith("error: ") for ln in lines[:-1]), err
    assert any(n.lower() in lines[-1].lower() for n in case.names), (case.names, lines[-1])
    if hit is not None:
        assert hit, f"the disk never filled: no fsync of {case.full_disk_at} under {tmp_path / 'out'}"
    after = snapshot(tmp_path)
    for path, blob in after.items():
        name = Path(path).name
        assert not runs._TEMP.search(name), f"temp file left: {path}"
        if name in campaign.RESULT_FILES or name.startswith("fig."):
            assert before.get(path) == blob, f"{path} was written by a failing command"
    mnist = str(tmp_path / "mnist")
    assert {k: v for k, v in after.items() if k.startswith(mnist)} == {
        k: v for k, v in before.items() if k.startswith(mnist)}, "the data dir was changed"


@pytest.mark.parametrize("command", list(campaign.commands()))
def test_every_command_has_cases_and_a_valid_base(command, tmp_path, capsys, monkeypatch):
    """Each command is in the campaign, and its base invocation (what each case spoils) succeeds."""
    assert [c for c in CASES if c.command == command], f"{command}: no generated case"
    _campaign_env(tmp_path, monkeypatch, real_data=command == "data check")
    code, err = run_cli(campaign.control(command, campaign.commands()[command], tmp_path), capsys)
    assert code == 0, err


# ---- 1. command-line values ------------------------------------------------------------------------------------

ARGS = [
    # (argv, words the one-line error must hold: the problem and the fix)
    pytest.param(["sweep", "--layers", "0"], ["layers '0'", ">= 1"], id="L<1-sweep"),
    pytest.param(["train", "--layers", "0"], ["layers=0", "positive integer"], id="L<1-train"),
    pytest.param(["sweep", "--layers", "-1"], ["layers", "write a list like"], id="L-negative-sweep"),
    pytest.param(["sweep", "--width", "0"], ["width '0'", ">= 1"], id="width<1-sweep"),
    pytest.param(["train", "--width", "0"], ["width=0", "positive integer"], id="width<1-train"),
    pytest.param(["train", "--width", "wide"], ["--width 'wide'", "pass an integer"], id="width-not-int"),
    pytest.param(["train", "--budget", "100"], ["budget 100 is too small", "at least"], id="budget-too-small"),
    pytest.param(["train", "--budget", "810", "--layers", "8"], ["too small for 8 hidden", "at least 819"],
                 id="budget-too-small-for-L"),
    pytest.param(["params", "--budget", "100"], ["too small", "at least"], id="budget-too-small-params"),
    pytest.param(["train", "--epochs", "1.5"], ["--epochs", "valid int", "--help"], id="epochs-not-int"),
    pytest.param(["train", "--epochs", "-1"], ["epochs=-1", "positive integer"], id="epochs-negative"),
    pytest.param(["sweep", "--epochs", "0"], ["epochs=0", "positive integer"], id="epochs-zero-sweep"),
    pytest.param(["train", "--batch-size", "2.5"], ["--batch-size", "valid int"], id="batch-not-int"),
    pytest.param(["train", "--batch-size", "0"], ["batch_size=0", "positive integer"], id="batch-zero"),
    pytest.param(["sweep", "--batch-size", "-64"], ["batch_size=-64", "positive integer"], id="batch-negative"),
    pytest.param(["train", "--lr", "0"], ["lr=0.0", "finite learning rate > 0"], id="lr-zero"),
    pytest.param(["train", "--lr", "-0.1"], ["lr=-0.1", "> 0"], id="lr-negative"),
    pytest.param(["train", "--lr", "nan"], ["lr=nan", "finite"], id="lr-nan"),
    pytest.param(["sweep", "--lr", "nan"], ["lr=nan", "finite"], id="lr-nan-sweep"),
    pytest.param(["train", "--lr", "inf"], ["lr=inf", "finite"], id="lr-inf"),
    pytest.param(["train", "--lr", "fast"], ["Invalid value for '--lr'", "--help"], id="lr-not-number"),
    pytest.param(["train", "--seed", "-1"], ["seed=-1", ">= 0"], id="seed-negative"),
    pytest.param(["sweep", "--seeds", "a-b"], ["seeds 'a-b'", "write a list like"], id="seeds-garbage"),
    pytest.param(["train", "--train-subset", "0"], ["train_subset=0", "positive integer"], id="subset-zero"),
    pytest.param(["train", "--threads", "0"], ["threads=0", "positive integer"], id="threads-zero"),
    pytest.param(["train", "--model", "cnn"], ["model='cnn'", "linear or mlp"], id="model-unknown"),
    pytest.param(["train", "--init", "he"], ["init='he'", "torch or glorot"], id="init-unknown"),
    pytest.param(["train", "--precision", "fp8"], ["precision='fp8'", "fp32 or bf16"], id="precision-unknown"),
    pytest.param(["train", "--device", "tpu"], ["device='tpu'", "auto, cpu or cuda"], id="device-unknown"),
    pytest.param(["reproduce", "--seeds", "0"], ["seeds", "positive integer"], id="reproduce-seeds-zero"),
    pytest.param(["train", "--no-such-option"], ["--no-such-option", "--help"], id="option-unknown"),
    pytest.param(["sampled", "bias", "--samples", "0"], ["samples '0'", ">= 1"], id="K<1"),
    pytest.param(["sampled", "bias", "--samples", "x"], ["samples 'x'", "write a list like"], id="K-not-int"),
    pytest.param(["sampled", "bias", "--classes", "1"], ["classes", ">= 2"], id="C<2"),
    pytest.param(["sampled", "bias", "--sampler", "zipfian"], ["unknown sampler 'zipfian'", "choose one of"],
                 id="sampler-unknown"),
]


@pytest.mark.parametrize("argv,needles", ARGS)
def test_bad_option_values(argv, needles, fake, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a command that wrongly went ahead would write its default --out here
    out = tmp_path / "out"
    argv = argv + (["--out", str(out)] if argv[0] in ("sweep", "reproduce") else [])
    before = snapshot(tmp_path)
    code, err = run_cli(argv, capsys)
    assert_clean_error(code, err, needles, before, tmp_path)
    assert not (out / "runs").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--sampler", "kernel", "--mixed"], "drop --mixed"),
    (["--sampler", "kernel", "--mnist"], "drop --mnist"),
    (["--plot", "/nonexistent/fig.png"], "not an existing folder"),
], ids=["kernel-mixed", "kernel-mnist", "plot-folder-missing"])
def test_sampled_bias_options_checked_before_compute(argv, needle, capsys, monkeypatch):
    """A bad combination or --plot folder fails at once: neither a model nor the study runs first."""
    from softmaxlab import cli

    def computed(*a, **k):
        raise AssertionError("computed before the options were checked")
    for owner, name in ((cli.study, "mnist_logits"), (cli, "kernel_bias_study"), (cli, "bias_study")):
        monkeypatch.setattr(owner, name, computed)
    code, err = run_cli(["sampled", "bias", *argv], capsys)
    assert code == 2 and err.startswith("error: ") and needle in err, err


# ---- 2. config files -------------------------------------------------------------------------------------------

CONFIGS = [
    pytest.param("layers = '1'\nlayerz = 2\n", ["unknown key 'layerz'", "use only", "layers"], id="config-unknown-key"),
    pytest.param("epochs = 'five'\n", ["epochs = 'five'", "expected an integer", "fix its type"],
                 id="config-wrong-type"),
    pytest.param("epochs = 2.5\n", ["epochs", "expected an integer"], id="config-float-for-int"),
    pytest.param("lr = true\n", ["lr", "expected a number"], id="config-bool-for-float"),
    pytest.param("lr = -1.0\n", ["lr=-1.0", "> 0"], id="config-lr-negative"),
    pytest.param("layers = [1, 2\n", ["not valid TOML", "fix its syntax"], id="config-bad-toml"),
    pytest.param(b"\x00\xff\xfe", ["not UTF-8"], id="config-binary"),
    pytest.param(None, ["cannot read config", "pass an existing TOML file"], id="config-missing"),
]


@pytest.mark.parametrize("text,needles", CONFIGS)
def test_bad_config_files(text, needles, fake, tmp_path, capsys):
    cfg = tmp_path / "study.toml"
    if text is not None:
        cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    code, err = run_cli(["sweep", "--config", str(cfg), "--out", str(out), *TINY], capsys)
    assert_clean_error(code, err, needles, before, tmp_path)


# ---- 3. output folders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first,then,needles", [
    pytest.param(["sweep", "--seeds", "0"], ["sweep", "--seeds", "0", "--epochs", "2"], ["differs in epochs"],
                 id="out-other-protocol"),
    pytest.param(["sweep", "--seeds", "0"], ["sweep", "--seeds", "0", "--lr", "0.5"], ["differs in lr"],
                 id="out-other-lr"),
    pytest.param(["sweep", "--seeds", "0"], ["reproduce", "--epochs", "1", "--layers", "1"], ["different study"],
                 id="out-other-kind"),
])
def test_out_holding_another_study(first, then, needles, fake, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli([*first, "--layers", "1", "--out", str(out), *TINY], capsys)
    assert code == 0, err
    before = snapshot(tmp_path)
    assert any(Path(p).name == "result.json" for p in before)
    extra = _without(TINY, then) if then[0] == "sweep" else ["--device", "cpu", "--threads", "1"]
    code, err = run_cli([*then, "--out", str(out), *extra], capsys)
    assert_clean_error(code, err, [*needles, "pass a fresh --out"], before, tmp_path)
    assert snapshot(tmp_path) == before  # the other study's records are untouched


def _without(tiny: list[str], argv: list[str]) -> list[str]:
    """TINY's option pairs that argv does not set itself."""
    pairs = list(zip(tiny[::2], tiny[1::2]))
    return [x for k, v in pairs if k not in argv for x in (k, v)]


# ---- 4. the disk fills up during a write (simulated: ENOSPC from fsync, after the temp file's bytes) ----------

TARGETS = ["study.json", "config.json", "checkpoint.pt", "metrics.jsonl", "result.json", "results.csv",
           "summary.json"]
WRITERS: dict[str, str] = {}  # the module whose open() writes that file (else runs.atomic_write)


def _target_of(path) -> str:
    return re.sub(r"^\.|\.tmp\d+$", "", Path(path).name)


@pytest.mark.parametrize("how", ["fsync", "dev-full"])
@pytest.mark.parametrize("target", TARGETS, ids=[f"disk-full-{t}" for t in TARGETS])
def test_disk_full_during_a_write(target, how, fake, tmp_path, capsys, monkeypatch):
    """The first write of `target` fails with ENOSPC: one clear line, no temp file left, no result written; with
    space again, re-running finishes and gives the results of a sweep that never failed.

    how: "fsync" fails the fsync after the temp file's bytes are written (the error injected); "dev-full"
    sends the write to /dev/full, so the kernel itself answers ENOSPC (at write or flush).
    """
    if not Path("/proc/self/fd").is_dir() or not Path("/dev/full").exists():
        pytest.skip("needs Linux's /proc/self/fd and /dev/full")
    argv = ["sweep", "--layers", "1-2", "--seeds", "0", *TINY]
    code, err = run_cli([*argv, "--out", str(tmp_path / "ref")], capsys)
    assert code == 0, err
    real_fsync, hit = os.fsync, []
    if how == "fsync":
        def fsync(fd):
            if _target_of(os.readlink(f"/proc/self/fd/{fd}")) == target and not hit:
                hit.append(target)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        def full_open(file, mode="r", *a, **kw):
            if "w" in mode and _target_of(file) == target and runs._TEMP.search(Path(file).name) and not hit:
                hit.append(target)
                file = "/dev/full"
            return open(file, mode, *a, **kw)

        monkeypatch.setattr(WRITERS.get(target, "softmaxlab.mnist.records") + ".open", full_open, raising=False)
    out = tmp_path / "out"
    before = snapshot(out)
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert hit == [target]
    # runs that finished before the disk filled keep their (complete) results; what failed is not there
    finished = {"results.csv": ["result.json"], "summary.json": ["result.json", "results.csv"]}.get(target, [])
    assert_clean_error(code, err, ["No space left on device", "free some space"], before, out, finished=finished)
    assert not list(out.rglob(target))  # its first write failed, and the command stopped there
    monkeypatch.undo()
    monkeypatch.setattr("softmaxlab.mnist.study.load_data", lambda data_dir=None, **kw: fake)
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0, err

    def results(d):
        rs = [json.loads(p.read_text()) for p in sorted((d / "runs").glob("*/result.json"))]
        return [(r["run_id"], r["test_acc"], r["val_acc"], [h["train_loss"] for h in r["history"]]) for r in rs]

    assert results(out) == results(tmp_path / "ref") and len(results(out)) == 2


# ---- 5. MNIST files (small synthetic ones stand in: the CLI's loader is pointed at their checksum table) -------

NAMES = (data.TRAIN_IMAGES, data.TRAIN_LABELS, data.TEST_IMAGES, data.TEST_LABELS)


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


@pytest.fixture
def mnist_like(tmp_path, monkeypatch):
    """A data dir of four small, valid IDX files (gzip) and MNIST_FILES pointed at their checksums."""
    rng = np.random.default_rng(0)
    arrays = {data.TRAIN_IMAGES: rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              data.TRAIN_LABELS: rng.integers(0, 10, 30, dtype=np.uint8),
              data.TEST_IMAGES: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              data.TEST_LABELS: rng.integers(0, 10, 10, dtype=np.uint8)}
    payloads = {n: idx_bytes(a) for n, a in arrays.items()}
    monkeypatch.setattr(data, "MNIST_FILES", {n: (hashlib.sha256(p).hexdigest(), len(p)) for n, p in payloads.items()})
    monkeypatch.setenv("SOFTMAXLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOFTMAXLAB_MNIST_MIRRORS", "http://127.0.0.1:9/")  # a dead port: no real network
    d = tmp_path / "mnist"
    d.mkdir()
    for n, p in payloads.items():
        (d / f"{n}.gz").write_bytes(gzip.compress(p, mtime=0))
    return d, payloads


def _flip_label(p: bytes) -> bytes:
    b = bytearray(p)
    b[-1] = (b[-1] + 1) % 10
    return bytes(b)


def _replace(d: Path, name: str, blob: bytes | None, gz: bool = True):
    (d / f"{name}.gz").unlink()
    if blob is not None:
        (d / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(blob, mtime=0) if gz else blob)


def test_download_that_fails_verification_is_not_used(mnist_like, tmp_path, capsys, monkeypatch):
    """A missing file whose mirror serves corrupt bytes: refused before use, nothing placed in the data dir."""
    d, payloads = mnist_like
    _replace(d, data.TEST_LABELS, None)
    served = tmp_path / "mirror"
    served.mkdir()
    (served / f"{data.TEST_LABELS}.gz").write_bytes(gzip.compress(_flip_label(payloads[data.TEST_LABELS])))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("SOFTMAXLAB_MNIST_MIRRORS", f"http://127.0.0.1:{srv.server_address[1]}/")
    before = snapshot(tmp_path)
    try:
        code, err = run_cli(["sweep", "--data-dir", str(d), "--out", str(tmp_path / "out"), *TINY], capsys)
    finally:
        srv.shutdown()
    assert_clean_error(code, err, ["could not download", "sha256", data.TEST_LABELS], before, tmp_path)
    assert not (d / f"{data.TEST_LABELS}.gz").exists()


# ---- 6. checkpoints: unreadable ones are an error, and loading never runs code -----------------------------------


class Payload:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["SOFTMAXLAB_PWNED"]), "ran"))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "pickle-with-code"])
def test_bad_checkpoint_in_a_run_folder(kind, fake, tmp_path, capsys, monkeypatch):
    """A run's checkpoint.pt that is not ours: one line naming it, and a pickle's code never runs."""
    argv = ["sweep", "--layers", "1", "--seeds", "0", "--out", str(tmp_path / "out"), *_with(TINY, "--epochs", "2")]
    code, err = run_cli(argv, capsys)  # a real run, with a real checkpoint
    assert code == 0, err
    (rd,) = (tmp_path / "out" / "runs").iterdir()
    (rd / "result.json").unlink()  # as if killed before the end
    ck = rd / "checkpoint.pt"
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("SOFTMAXLAB_PWNED", str(pwned))
    if kind == "garbage":
        ck.write_bytes(os.urandom(1000))
    elif kind == "truncated":
        ck.write_bytes(ck.read_bytes()[:2000])
    else:
        torch.save({"epoch": 1, "model": Payload()}, ck)
    before = snapshot(tmp_path)
    code, err = run_cli(argv, capsys)
    assert_clean_error(code, err, [str(ck), "unreadable", "delete it to restart that run"], before, tmp_path)
    assert not pwned.exists()
    with pytest.raises(SoftmaxlabError):
        load_checkpoint(ck)
    assert not pwned.exists()


def _with(tiny: list[str], key: str, value: str) -> list[str]:
    out = list(tiny)
    out[out.index(key) + 1] = value
    return out


# ---- 7. the maths API (softmax.py, sampled.py, samplers.py): bad tensors and options ----------------------------


def _sampled():
    from softmaxlab import sampled

    return sampled


def _probs_sampler(q):
    from softmaxlab import samplers

    return samplers.ProbsSampler(torch.tensor(q, dtype=torch.float64))


B, D, C = 4, 3, 10
_g = torch.Generator().manual_seed(0)
X = torch.randn(B, D, dtype=torch.float64, generator=_g)  # (B, d)
W = torch.randn(C, D, dtype=torch.float64, generator=_g)  # (C, d)
BIAS = torch.zeros(C, dtype=torch.float64)  # (C,)
Y = torch.tensor([0, 1, 2, 3])  # (B,)


def _loss(**kw):
    args = dict(inputs=X, weight=W, bias=BIAS, labels=Y, num_sampled=3)
    args.update(kw)
    return _sampled().sampled_softmax_loss(**args)


def _float_pixels() -> Data:
    s = Split(torch.zeros(4, 784), torch.zeros(4, dtype=torch.long))  # float pixels, not the uint8 of load_mnist
    return Data(s, s, s)


def _softmax(x=X, w=W, b=BIAS, y=Y):
    from softmaxlab.softmax import softmax_xent_grads

    return softmax_xent_grads(x, w, b, y)


API = [
    pytest.param(lambda: _loss(num_sampled=0), ["num_sampled", ">= 1"], id="K<1-loss"),
    pytest.param(lambda: _loss(num_sampled=2.5), ["num_sampled", "integer"], id="K-not-int-loss"),
    pytest.param(lambda: _loss(num_sampled=C, unique=True), ["num_sampled < num_classes", "lower num_sampled"],
                 id="K>=C-unique"),
    pytest.param(lambda: _loss(labels=torch.tensor([0, 1, 2, C])), ["labels must lie in [0, 10)", "fix the labels"],
                 id="labels-too-big"),
    pytest.param(lambda: _loss(labels=torch.tensor([0, -1, 2, 3])), ["labels must lie in", "[-1"],
                 id="labels-negative"),
    pytest.param(lambda: _loss(labels=torch.tensor([0.0, 1, 2, 3])), ["labels", "integer"], id="labels-float"),
    pytest.param(lambda: _loss(weight=W[:, :2]), ["weight must be", "(10, 2)"], id="shapes-weight"),
    pytest.param(lambda: _loss(labels=Y[:3]), ["labels must have shape", "(3,)"], id="shapes-labels"),
    pytest.param(lambda: _loss(bias=BIAS[:5]), ["bias"], id="shapes-bias"),
    pytest.param(lambda: _loss(estimator="unbiased"), ["unknown estimator 'unbiased'", "choose one of"],
                 id="estimator-unknown"),
    pytest.param(lambda: _loss(sampler="zipfian"), ["unknown sampler 'zipfian'", "choose one of"],
                 id="sampler-unknown-loss"),
    pytest.param(lambda: _probs_sampler([0.5, -0.1, 0.6] + [0.0] * 7), ["negative"], id="probs-negative"),
    pytest.param(lambda: _probs_sampler([float("nan")] + [0.1] * 9), ["NaN"], id="probs-nan"),
    pytest.param(lambda: _probs_sampler([0.2] * 10), ["sum to 2", "normalise"], id="probs-not-summing-to-1"),
    pytest.param(lambda: _loss(sampler=_probs_sampler([0.5, 0.5] + [0.0] * 8), num_sampled=3, unique=True),
                 ["q > 0", "lower num_sampled"], id="probs-zeros-unique"),
    pytest.param(lambda: _softmax(y=torch.tensor([0, 1, 2, 11])), ["labels must lie in [0, 10)", "fix the labels"],
                 id="softmax-labels-too-big"),
    pytest.param(lambda: _softmax(w=W[:, :2]), ["W must be (C, d)", "pass a (classes, features) matrix"],
                 id="softmax-shapes"),
    pytest.param(lambda: TrainConfig(model="mlp", layers=True).validate(), ["layers=True", "positive integer"],
                 id="config-bool-as-int"),
    pytest.param(lambda: train(TrainConfig(epochs=1, device="cpu"), _float_pixels()), ["uint8", "load_mnist"],
                 id="train-float-pixels"),
]


@pytest.mark.parametrize("call,needles", API)
def test_bad_tensors_and_options(call, needles):
    with pytest.raises(SoftmaxlabError) as ei:
        call()
    msg = str(ei.value)
    assert msg and "\n" not in msg, msg
    for s in needles:
        assert s in msg, (s, msg)


# Issue 7 listed these as bad inputs; they are valid, so they are tested as accepted (issue 16 decided).


def test_k_at_least_c_is_accepted_when_drawing_with_replacement(capsys):
    """K >= C draws with replacement are a valid estimator (repeats allowed); only unique draws refuse K >= C
    (row K>=C-unique above)."""
    code, err = run_cli(["sampled", "bias", "--classes", "10", "--samples", "10"], capsys)
    assert code == 0, err
    loss = _loss(num_sampled=C)
    assert torch.isfinite(loss)


def test_zero_probabilities_are_accepted_and_never_drawn():
    """A proposal with zeros is valid (those classes are never drawn); unique draws beyond its support are refused
    (row probs-zeros-unique above)."""
    s = _probs_sampler([0.5, 0.5] + [0.0] * 8)
    assert s.support == 2
    ids = s.sample(1000, generator=torch.Generator().manual_seed(0)).ids
    assert set(ids.tolist()) == {0, 1}


# ---- numerical faults ------------------------------------------------------------------------------------------


def test_divergence_is_recorded_at_its_step_and_the_sweep_goes_on(fake, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", "--layers", "1-2", "--seeds", "0-1", "--lr", "1e20", *_with(TINY, "--epochs", "2")]
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    res = [json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")]
    assert len(res) == 4 and all(r["status"] == "diverged" for r in res)
    for r in res:  # step 1 sends the weights to ~1e19; step 2's forward pass overflows and is caught there
        assert r["diverged_at"] == {"epoch": 1, "step": 2} and r["epochs_done"] == 0 and "test_acc" not in r
        assert len(r["history"]) == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and all(",diverged," in row for row in rows[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert [row["diverged"] for row in summary["rows"]] == [2, 2]


def test_divergence_mid_sweep_leaves_the_other_runs_alone(fake, tmp_path):
    """Runs with a sane lr around one that blows up: it is recorded diverged (no NaN checkpoint), they finish."""
    from softmaxlab.mnist.runner import execute

    base = TrainConfig(model="mlp", layers=1, width=8, epochs=2, batch_size=32, device="cpu", threads=1)
    plan = [base, dataclasses.replace(base, lr=1e20), dataclasses.replace(base, seed=1)]
    res = execute(plan, tmp_path / "out", fake, progress=False, log=lambda s: None)
    assert [r["status"] for r in res] == ["ok", "diverged", "ok"]
    assert res[1]["diverged_at"] == {"epoch": 1, "step": 2}
    ck = tmp_path / "out" / "runs" / res[1]["run_id"] / "checkpoint.pt"
    assert not ck.exists() or all(torch.isfinite(v).all() for v in load_checkpoint(ck)["model"].values())


@pytest.mark.parametrize("scale", [1e4, -1e4, 1e3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_up_to_1e4_stay_finite_in_every_estimator(scale, dtype):
    """Logits of +/- 1e4 (biases alternating +scale, -scale): loss and gradients finite, for the full softmax and
    every sampled estimator."""
    from softmaxlab.softmax import SoftmaxXent

    b = torch.full((C,), scale, dtype=dtype)
    b[::2] = -scale
    x = X.to(dtype).requires_grad_()
    w = torch.zeros(C, D, dtype=dtype, requires_grad=True)
    SoftmaxXent.apply(x, w, b, Y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    sampled = _sampled()
    for est in sampled.ESTIMATORS:
        x.grad = w.grad = None
        loss = sampled.sampled_softmax_loss(x, w, b, Y, 5, estimator=est, generator=torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all(), est
