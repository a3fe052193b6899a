"""The --config TOML loader: typed values, one-line errors for unknown keys and wrong types, fuzzed; CLI precedence."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softmaxlab.config import field_types, load_config
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist.configs import ReproduceConfig, SweepConfig, TrainConfig

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(tmp_path, text: str | bytes, name="c.toml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def one_line(excinfo, *needles) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "\r" not in msg and msg.strip() == msg, msg
    for s in needles:
        assert s in msg, (s, msg)
    return msg


def test_values_come_back_typed_and_build_the_config(tmp_path):
    p = write(tmp_path, 'model = "linear"\nlayers = 3\nlr = 1\nbatch-size = 32\nnormalize = true\n'
                        'train_subset = 500\neval_subset = "auto"\nwidth = "none"\n')
    got = load_config(p, TrainConfig)
    assert got == dict(model="linear", layers=3, lr=1.0, batch_size=32, normalize=True, train_subset=500,
                       eval_subset=None, width=None)
    assert isinstance(got["lr"], float)
    cfg = TrainConfig(**got).validate()
    assert cfg.lr == 1.0 and cfg.batch_size == 32
    assert load_config(write(tmp_path, ""), SweepConfig) == {}


def test_a_type_mapping_works_like_a_dataclass(tmp_path):
    types = dict(data_dir=Optional[Path], epochs=int)
    assert load_config(write(tmp_path, 'data_dir = "/x"\nepochs = 2\n'), types) == dict(data_dir=Path("/x"), epochs=2)


@pytest.mark.parametrize("text,cls,needles", [
    ("nope = 1\n", TrainConfig, ["unknown key 'nope'", "lr", "batch_size"]),
    ("a = 1\nb = 2\nlr = 0.1\n", TrainConfig, ["unknown keys 'a', 'b'"]),
    ("'a\\nb' = 1\n", TrainConfig, ["unknown key"]),
    ('lr = "fast"\n', TrainConfig, ["lr", "'fast'", "a string", "expected a number"]),
    ("layers = 1.5\n", TrainConfig, ["layers", "expected an integer"]),
    ("layers = true\n", TrainConfig, ["layers", "a boolean", "expected an integer"]),
    ("lr = true\n", TrainConfig, ["lr", "expected a number"]),
    ("normalize = 1\n", TrainConfig, ["normalize", "expected true or false"]),
    ("model = 3\n", TrainConfig, ["model", "expected a string"]),
    ("width = 2.5\n", TrainConfig, ["width", "expected an integer", "auto"]),
    ("width = [1, 2]\n", TrainConfig, ["width", "an array"]),
    ("seeds = 3\n", SweepConfig, ["seeds", "expected a string"]),
    ("seeds = 3.0\n", ReproduceConfig, ["seeds", "expected an integer"]),
    ("quick = 'yes'\n", ReproduceConfig, ["quick", "expected true or false"]),
    ("[table]\nx = 1\n", TrainConfig, ["unknown key 'table'"]),
    ("lr = 0.1\nlr = 0.2\n", TrainConfig, ["not valid TOML", "fix its syntax"]),
    ("lr = \n", TrainConfig, ["not valid TOML"]),
    ("batch_size = 32\nbatch-size = 64\n", TrainConfig, ["batch_size", "twice"]),
    (b"\xff\xfe = 1", TrainConfig, ["not UTF-8"]),
    pytest.param("lr = " + "[" * 5000 + "]" * 5000, TrainConfig, ["not valid TOML"], id="deep-nesting"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, cls, needles):
    with pytest.raises(SoftmaxlabError) as ei:
        load_config(write(tmp_path, text), cls)
    one_line(ei, *needles)


@pytest.mark.parametrize("text", ["lr = nan\n", "lr = inf\n", "lr = -1\n", "lr = 1e999999999999\n"])
def test_numbers_the_loader_accepts_are_judged_by_validate(tmp_path, text):
    """The loader checks types; values (lr <= 0, NaN, inf) are TrainConfig.validate's job, one line too."""
    got = load_config(write(tmp_path, text), TrainConfig)
    with pytest.raises(SoftmaxlabError, match="lr=.*finite learning rate > 0"):
        TrainConfig(**got).validate()


def test_unreadable_paths(tmp_path):
    with pytest.raises(SoftmaxlabError) as ei:
        load_config(tmp_path / "missing.toml", TrainConfig)
    one_line(ei, "cannot read config", "missing.toml")
    with pytest.raises(SoftmaxlabError) as ei:
        load_config(tmp_path, TrainConfig)  # a folder
    one_line(ei, "cannot read config")
    with pytest.raises(SoftmaxlabError) as ei:
        load_config(write(tmp_path, b"# " + b"x" * (1 << 21)), TrainConfig)
    one_line(ei, "not a config")


# ---- fuzzing: whatever the file holds, the loader returns typed values or raises SoftmaxlabError -------------


def check_loaded(got: dict, cls) -> None:
    types = field_types(cls)
    for k, v in got.items():
        tp = types[k]
        if v is None:  # only where the field admits None (int | None and Optional[int] alike)
            assert type(None) in getattr(tp, "__args__", ()), (k, tp)
            continue
        base = [a for a in getattr(tp, "__args__", (tp,)) if a is not type(None)][0]
        assert isinstance(v, base) and not (base is not bool and isinstance(v, bool)), (k, v, tp)


def load_or_error(path, cls):
    try:
        got = load_config(path, cls)
    except SoftmaxlabError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg, msg
        return None
    check_loaded(got, cls)
    return got


CLASSES = st.sampled_from([TrainConfig, SweepConfig, ReproduceConfig])


@FUZZ
@given(raw=st.binary(max_size=300), cls=CLASSES)
def test_fuzz_random_bytes(tmp_path, raw, cls):
    load_or_error(write(tmp_path, raw), cls)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list('abl_r-="[]{}.,#\n 0123456789e+-.truefalsinf\'\\')),
                    max_size=120), cls=CLASSES)
def test_fuzz_toml_like_text(tmp_path, text, cls):
    load_or_error(write(tmp_path, text), cls)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


VALUES = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=10),
                   st.lists(st.integers(0, 9), max_size=3), st.sampled_from(["auto", "none", "1-8", "0,2"]))


@FUZZ
@given(cls=CLASSES, data=st.data())
def test_fuzz_well_formed_files_with_random_keys_and_values(tmp_path, cls, data):
    names = [f.name for f in dataclasses.fields(cls)]
    keys = data.draw(st.lists(st.one_of(st.sampled_from(names), st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
                              max_size=6, unique=True))
    doc = {k: data.draw(VALUES) for k in keys}
    got = load_or_error(write(tmp_path, "".join(f"{k} = {toml_value(v)}\n" for k, v in doc.items())), cls)
    if got is not None:  # accepted: every key was a field and every value had the field's type
        assert set(got) == {k for k in doc}
        for k, v in got.items():
            if isinstance(doc[k], (int, float)) and not isinstance(doc[k], bool) and v is not None:
                assert v == doc[k] or (v != v and doc[k] != doc[k])


# ---- the CLI: file values are defaults, options given on the command line win ---------------------------------


def test_cli_options_override_the_file(tmp_path, monkeypatch):
    """In-process: `train --config` builds the TrainConfig from the file, then the explicit options."""
    from softmaxlab import cli

    seen = {}

    def no_data(data_dir=None):
        raise SoftmaxlabError("stop here: the config is captured")

    monkeypatch.setattr("softmaxlab.mnist.study.load_data", no_data)

    real_validate = TrainConfig.validate

    def spy(self):
        seen["cfg"] = self
        return real_validate(self)

    monkeypatch.setattr(TrainConfig, "validate", spy)
    p = write(tmp_path, 'layers = 3\nwidth = 40\nlr = 0.5\nepochs = 7\neval-subset = 100\nthreads = "auto"\n')
    with pytest.raises(SystemExit) as ei:
        cli.main(["train", "--config", str(p), "--lr", "0.25", "--width", "auto"])
    assert ei.value.code == 2
    cfg = seen["cfg"]
    assert (cfg.layers, cfg.epochs, cfg.eval_subset, cfg.threads) == (3, 7, 100, None)  # from the file
    assert cfg.lr == 0.25 and cfg.width is None  # given on the command line (auto), not the file's 40


def test_cli_config_errors_exit_2_one_line(tmp_path):
    p = write(tmp_path, "layers = 2\nbogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "softmaxlab", "sweep", "--config", str(p)], capture_output=True,
                       text=True, env=dict(os.environ, SOFTMAXLAB_DATA=str(tmp_path)), timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "unknown key 'bogus'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["train", "sweep", "reproduce"])
def test_help_of_optional_ints_says_auto_not_none(command):
    """An int | None field is `auto` on the command line: no option's help tells the user to type None."""
    import typer

    from softmaxlab import cli

    cmd = typer.main.get_command(cli.app).commands[command]
    assert any(p.default == "auto" for p in cmd.params), "no int | None option found"
    for p in cmd.params:
        assert "None" not in (getattr(p, "help", None) or ""), (p.name, p.help)
