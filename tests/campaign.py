"""The bad-input campaign, generated: every CLI command x every bad shape of each input that command reads.

Commands are read from the typer app itself, so a new command joins the campaign without an edit here. What a
command reads follows from its declared options:

- every option that takes a value gets an empty, a wrong-typed and an out-of-range value (more for ints and
  floats, read from the option's default), every flag a value it does not take;
- --data-dir (the command reads MNIST): each of the four files missing, empty, truncated at several points
  (raw and gzip), random bytes, the right size with a wrong checksum, a gzip of the wrong file, a folder where
  the file should be; and the data dir empty, absent, a file, read-only;
- --config: the file missing, a folder, broken TOML, not UTF-8, too big, an unknown key; and every key the
  command takes given a wrong type (and, for numbers, an out-of-range value);
- --out: a file, inside a file, read-only, empty, and the disk filling up at the first write and at a result;
  --plot (an output file) likewise.

tests/test_bad_inputs.py runs every case in-process (softmaxlab.cli.main, stderr captured) and checks one
`error:` line, exit code 2, no traceback, nothing written that passes for a result; scripts/reliability.py counts
them by command for docs/reliability.md.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import hashlib
import io
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import fakes
import numpy as np
import typer

from softmaxlab import cli
from softmaxlab.mnist import data

NAMES = (data.TRAIN_IMAGES, data.TRAIN_LABELS, data.TEST_IMAGES, data.TEST_LABELS)

# Values that keep a command's valid base invocation to a second or so (fake data: tests/fakes.py), applied to
# every command that has the option. A case on one of these options replaces it.
TINY = {"--width": "8", "--epochs": "1", "--batch-size": "32", "--device": "cpu", "--threads": "1", "--layers": "1",
        "--seeds": "1", "--workers": "1", "--bias-classes": "100", "--samples": "2,4"}
TINY_FLAGS = ("--quick",)
# The option under which a command reads MNIST at all (else --data-dir is unused).
READS_MNIST_WITH = {"sampled bias": ["--mnist"]}
ROLES = {"data_dir": "data", "config_file": "config", "out": "output", "plot": "output file"}
RESULT_FILES = ("result.json", "results.csv", "summary.json", "report.html", "report.md", "problem1.json")


@dataclass(frozen=True)
class Case:
    command: str
    """'train', 'data check', ..."""
    input: str
    """What is bad: '--epochs', 'config', 'config: epochs', 'data: t10k-images-idx3-ubyte', 'data dir', '--out'."""
    shape: str
    """How it is bad: 'empty', 'truncated at 10 bytes', 'wrong type', ..."""
    make: Callable[[Path], list[str]] = field(compare=False, repr=False)
    """make(tmp) -> the argv after the command's words; creates the files the case needs under tmp."""
    real_data: bool = False
    """Load MNIST through data.py (from small IDX files, checksums patched) instead of the fake data."""
    full_disk_at: str | None = None
    """'first' or a file name: the first fsync of that write fails with ENOSPC."""
    names: tuple[str, ...] = ()
    """The error line holds one of these: it names what is wrong."""

    @property
    def id(self) -> str:
        return f"{self.command}|{self.input}|{self.shape}"


def commands(app=cli.app) -> dict[str, object]:
    """'data check' -> its click command, for every leaf command of the app."""
    out: dict[str, object] = {}

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out[" ".join(path)] = cmd

    walk(typer.main.get_command(app), [])
    return out


def options(cmd) -> list:
    return [p for p in cmd.params if getattr(p, "opts", None) and p.opts[0].startswith("--")]


def base_args(command: str, cmd, without: str | None = None) -> list[str]:
    """The command's words and a tiny valid invocation (TINY, where the command has those options)."""
    have = {p.opts[0]: p for p in options(cmd)}
    args = command.split()
    for opt, value in TINY.items():
        if opt in have and opt != without and not have[opt].is_flag:
            args += [opt, value]
    args += [f for f in TINY_FLAGS if f in have and f != without]
    return args


def _with_out(command: str, cmd, tmp: Path) -> list[str]:
    """--out inside tmp for commands that have one (a case on --out gives its own); for a command that reads a
    finished study there (`report`), a copy of one."""
    if "--out" not in {p.opts[0] for p in options(cmd)}:
        return []
    if command in READS_STUDY:
        finished_study(tmp / "out")
    return ["--out", str(tmp / "out")]


READS_STUDY = ("report",)
_STUDY: list[Path] = []


def finished_study(dest: Path) -> None:
    """A finished quick study (fake data, L = 1) copied to dest; built once per session."""
    if not _STUDY:
        tmpl = Path(tempfile.mkdtemp(prefix="softmaxlab-campaign-")) / "study"
        atexit.register(shutil.rmtree, tmpl.parent, True)
        d = fakes.fake_data(128, 64)
        with mock.patch("softmaxlab.mnist.study.load_data", lambda data_dir=None, **kw: d), \
                contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main(["reproduce", "--quick", "--layers", "1", "--workers", "1", "--bias-classes", "100",
                          "--device", "cpu", "--out", str(tmpl)])
            except SystemExit as e:
                assert e.code == 0, f"the campaign's template study failed (exit {e.code})"
        _STUDY.append(tmpl)
    shutil.copytree(_STUDY[0], dest)


# ---- options ------------------------------------------------------------------------------------------------


def option_values(p) -> list[tuple[str, str]]:
    """(shape, value) for an option that takes a value: empty, wrong type, out of range (and more for numbers,
    whose type is read from the default)."""
    vals = [("empty", ""), ("wrong type", "@@"), ("out of range", "-1")]
    if isinstance(p.default, int) and not isinstance(p.default, bool):
        vals += [("wrong type: a float", "1.5"), ("wrong type: a word", "x")]
    if isinstance(p.default, float):
        vals += [("wrong type: a word", "x"), ("out of range: nan", "nan"), ("out of range: inf", "inf")]
    return vals


def option_cases(command: str, cmd) -> list[Case]:
    cases = []
    for p in options(cmd):
        if p.name in ROLES:
            continue
        opt = p.opts[0]
        names = (opt, p.name, opt.lstrip("-").replace("-", "_"))
        shapes = [("given a value, a flag", f"{opt}=1")] if p.is_flag else [
            (shape, f"{opt}={v}") for shape, v in option_values(p)]
        for shape, arg in shapes:
            def make(tmp, arg=arg, opt=opt):
                return [*base_args(command, cmd, without=opt), *_with_out(command, cmd, tmp), arg]
            cases.append(Case(command, opt, shape, make, names=names))
    return cases


# ---- MNIST files --------------------------------------------------------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def small_mnist() -> dict[str, bytes]:
    """Four small, valid IDX payloads; the campaign points data.MNIST_FILES at their checksums."""
    rng = np.random.default_rng(0)
    arrays = {data.TRAIN_IMAGES: rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
              data.TRAIN_LABELS: rng.integers(0, 10, 30, dtype=np.uint8),
              data.TEST_IMAGES: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              data.TEST_LABELS: rng.integers(0, 10, 10, dtype=np.uint8)}
    return {n: idx_bytes(a) for n, a in arrays.items()}


def files_table(payloads: dict[str, bytes]) -> dict[str, tuple[str, int]]:
    return {n: (hashlib.sha256(p).hexdigest(), len(p)) for n, p in payloads.items()}


def write_mnist(d: Path, payloads: dict[str, bytes]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n, p in payloads.items():
        (d / f"{n}.gz").write_bytes(gzip.compress(p, mtime=0))
    return d


def _flip(b: bytes) -> bytes:
    """The same length, one data byte changed: the header is fine, the checksum is not."""
    x = bytearray(b)
    x[-1] = (x[-1] + 1) % 10
    return bytes(x)


def _other(name: str) -> str:
    return NAMES[(NAMES.index(name) + 2) % 4]  # images <-> images, labels <-> labels: the header shape is right


# shape -> what lies at the file's place: f(payloads, name) -> (bytes, stored as .gz) or "dir" or None (missing)
FILE_SHAPES: dict[str, Callable] = {
    "missing": lambda p, n: None,
    "empty": lambda p, n: (b"", False),
    "truncated at 3 bytes (in the magic number)": lambda p, n: (p[n][:3], False),
    "truncated at 10 bytes (in the header)": lambda p, n: (p[n][:10], False),
    "truncated at half": lambda p, n: (p[n][: len(p[n]) // 2], False),
    "truncated by one byte": lambda p, n: (p[n][:-1], False),
    "gzip truncated at 10 bytes": lambda p, n: (gzip.compress(p[n], mtime=0)[:10], True),
    "gzip truncated at half": lambda p, n: (gzip.compress(p[n], mtime=0)[: len(gzip.compress(p[n])) // 2], True),
    "gzip without its last 4 bytes": lambda p, n: (gzip.compress(p[n], mtime=0)[:-4], True),
    "random bytes": lambda p, n: (random.Random(n).randbytes(len(p[n])), False),
    "random bytes after a gzip magic": lambda p, n: (b"\x1f\x8b" + random.Random(n).randbytes(200), True),
    "right size, wrong checksum": lambda p, n: (gzip.compress(_flip(p[n]), mtime=0), True),
    "gzip of the wrong file": lambda p, n: (gzip.compress(p[_other(n)] if len(p[_other(n)]) != len(p[n])
                                                          else _flip(p[_other(n)]), mtime=0), True),
    "gzip of a text file": lambda p, n: (gzip.compress(b"<html>Not Found</html>\n", mtime=0), True),
    "trailing bytes": lambda p, n: (gzip.compress(p[n] + b"\0\0\0", mtime=0), True),
    "a folder where the file should be": lambda p, n: "dir",
}


def _damage(d: Path, payloads: dict[str, bytes], name: str, shape: str) -> None:
    (d / f"{name}.gz").unlink()
    what = FILE_SHAPES[shape](payloads, name)
    if what == "dir":
        (d / f"{name}.gz").mkdir()
    elif what is not None:
        blob, gz = what
        (d / (f"{name}.gz" if gz else name)).write_bytes(blob)


def _dir_shapes() -> dict[str, Callable[[Path, dict], Path]]:
    def empty(tmp, p):
        (tmp / "mnist").mkdir()
        return tmp / "mnist"

    def absent(tmp, p):
        return tmp / "no-such-dir"

    def a_file(tmp, p):
        (tmp / "mnist").write_bytes(gzip.compress(p[data.TRAIN_IMAGES]))
        return tmp / "mnist"

    def read_only(tmp, p):  # a file is missing and cannot be downloaded into it (mode bits, even for root)
        d = write_mnist(tmp / "mnist", p)
        (d / f"{data.TRAIN_LABELS}.gz").unlink()
        d.chmod(0o555)
        return d

    return {"empty": empty, "absent": absent, "a file": a_file, "read-only, a file missing": read_only}


DIR_SHAPES = _dir_shapes()


def data_cases(command: str, cmd) -> list[Case]:
    if "--data-dir" not in {p.opts[0] for p in options(cmd)}:
        return []
    extra = READS_MNIST_WITH.get(command, [])
    payloads = small_mnist()
    cases = []

    def argv(tmp, d):
        return [*base_args(command, cmd), *_with_out(command, cmd, tmp), *extra, "--data-dir", str(d)]

    for name in NAMES:
        for shape in FILE_SHAPES:
            def make(tmp, name=name, shape=shape):
                d = write_mnist(tmp / "mnist", payloads)
                _damage(d, payloads, name, shape)
                return argv(tmp, d)
            cases.append(Case(command, f"data: {name}", shape, make, real_data=True, names=(name, "mnist")))
    for shape, mk in DIR_SHAPES.items():
        cases.append(Case(command, "data dir", shape, lambda tmp, mk=mk: argv(tmp, mk(tmp, payloads)),
                          real_data=True, names=("mnist", "no-such-dir", *NAMES)))
    return cases


# ---- config files -------------------------------------------------------------------------------------------

CONFIG_SHAPES: dict[str, bytes | None | str] = {
    "missing": None,
    "a folder": "dir",
    "broken TOML": b"layers = [1, 2\n",
    "not UTF-8": b"\x00\xff\xfe\xfd",
    "too big": b"# " + b"x" * (1 << 20) + b"\n",
    "unknown key": b"no_such_key = 1\n",
}


def config_values(p) -> list[tuple[str, str]]:
    """(shape, TOML value) for one key: an array is the wrong type for every option; numbers get more."""
    vals = [("wrong type: an array", "[1, 2]")]
    if p.is_flag:
        vals.append(("wrong type: a string for a flag", '"yes"'))
    elif isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
        vals += [("wrong type: a string", '"x"'), ("out of range", "-1")]
    return vals


def config_cases(command: str, cmd) -> list[Case]:
    if "--config" not in {p.opts[0] for p in options(cmd)}:
        return []
    cases = []

    def with_config(tmp, blob):
        path = tmp / "study.toml"
        if blob == "dir":
            path.mkdir()
        elif blob is not None:
            path.write_bytes(blob)
        return [*base_args(command, cmd), *_with_out(command, cmd, tmp), "--config", str(path)]

    for shape, blob in CONFIG_SHAPES.items():
        cases.append(Case(command, "config", shape, lambda tmp, blob=blob: with_config(tmp, blob),
                          names=("config",)))
    for p in options(cmd):
        if p.name == "config_file":
            continue
        opt = p.opts[0]
        for shape, value in config_values(p):
            def make(tmp, key=p.name, value=value, opt=opt):
                path = tmp / "study.toml"
                path.write_text(f"{key} = {value}\n")
                # the key must come from the file: the base's value for that option would win over it
                return [*base_args(command, cmd, without=opt), *_with_out(command, cmd, tmp), "--config", str(path)]
            cases.append(Case(command, f"config: {p.name}", shape, make, names=(p.name, opt)))
    return cases


# ---- output folders and files -------------------------------------------------------------------------------


def read_only_dir(tmp: Path) -> Path:
    """A folder this process cannot create anything in. Root writes through permission bits: /proc it is."""
    if os.geteuid() == 0:
        return Path("/proc/softmaxlab-campaign")
    ro = tmp / "ro"
    ro.mkdir(mode=0o555)
    return ro


def output_cases(command: str, cmd) -> list[Case]:
    have = {p.opts[0] for p in options(cmd)}
    cases = []
    if "--out" in have:
        def out_is(tmp, kind):
            if kind == "a file":
                (tmp / "out").write_text("x")
                return tmp / "out"
            if kind == "inside a file":
                (tmp / "afile").write_text("x")
                return tmp / "afile" / "out"
            if kind == "read-only":
                return read_only_dir(tmp) / "out"
            return ""

        for kind in ("a file", "inside a file", "read-only", "empty"):
            cases.append(Case(command, "--out", kind, lambda tmp, kind=kind: [
                *base_args(command, cmd), "--out", str(out_is(tmp, kind))], names=("out", "write", "folder")))
        for at in ("first", "report.html" if command in READS_STUDY else "result.json"):
            cases.append(Case(command, "--out", f"disk full at the {at} write", lambda tmp: [
                *base_args(command, cmd), *_with_out(command, cmd, tmp)], full_disk_at=at,
                names=("No space left on device",)))
    if "--plot" in have:
        def plot_at(tmp, kind):
            if kind == "a folder":
                (tmp / "fig.png").mkdir()
                return tmp / "fig.png"
            if kind == "inside a file":
                (tmp / "afile").write_text("x")
                return tmp / "afile" / "fig.png"
            if kind == "read-only":
                return read_only_dir(tmp) / "fig.png"
            if kind == "unknown format":
                return tmp / "fig.docx"
            if kind == "disk full":
                return Path("/dev/full")
            return ""

        for kind in ("a folder", "inside a file", "read-only", "unknown format",
                     "disk full", "empty"):
            cases.append(Case(command, "--plot", kind, lambda tmp, kind=kind: [
                *base_args(command, cmd), "--plot", str(plot_at(tmp, kind))], names=("plot",)))
    return cases


# ---- the campaign -------------------------------------------------------------------------------------------

KINDS = {"option": option_cases, "data": data_cases, "config": config_cases, "output": output_cases}


def generate(app=cli.app) -> list[Case]:
    """Every case, in a fixed order: by command, then kind, then input and shape."""
    return [c for command, cmd in commands(app).items() for gen in KINDS.values() for c in gen(command, cmd)]


def control(command: str, cmd, tmp: Path) -> list[str]:
    """The valid base invocation the cases spoil (it must succeed: the cases then fail for their bad input)."""
    extra = ["--data-dir", str(write_mnist(tmp / "mnist", small_mnist()))] if command == "data check" else []
    return [*base_args(command, cmd), *_with_out(command, cmd, tmp), *extra]
