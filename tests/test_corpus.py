"""The corpus loader on a tiny text the test writes, and benchmarks/lm.py end to end (--quick) on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from softmaxlab.corpus import build, tokenize, windows
from softmaxlab.errors import SoftmaxlabError

ROOT = Path(__file__).resolve().parents[1]
TEXT = "Ge1:1 In the beginning God created the heaven and the earth.\nGe1:2 And the earth was without form, " \
       "and void; and darkness was upon the face of the deep.\nGe1:3 And God said, Let there be light: and " \
       "there was light. Isn't it? The LORD's light.\n"


def test_tokenize_lowercases_keeps_punctuation_and_drops_verse_references():
    toks = tokenize(TEXT)
    assert toks[:5] == ["in", "the", "beginning", "god", "created"]
    assert "ge1" not in toks and "1" not in toks and "," in toks and ":" in toks and "isn't" in toks
    assert "lord's" in toks and tokenize(TEXT) == toks  # deterministic


def test_build_splits_by_position_and_sorts_the_vocabulary_by_training_frequency():
    c = build(TEXT * 3, split=(0.6, 0.2))
    toks = tokenize(TEXT * 3)
    n = len(toks)
    assert (c.train.numel(), c.valid.numel(), c.test.numel()) == (int(0.6 * n), int(0.8 * n) - int(0.6 * n),
                                                                  n - int(0.8 * n))
    assert c.vocab[-1] == "<unk>" and c.vocab[0] == "the"
    counts = c.counts[:-1].tolist()
    assert counts == sorted(counts, reverse=True) and sum(counts) == c.train.numel()
    assert [c.vocab[i] for i in c.train[:5]] == toks[:5]
    unknown = [w not in c.vocab[:-1] for w in toks[c.train.numel():int(0.8 * n)]]
    assert ((c.valid == c.unk) == torch.tensor(unknown)).all()


def test_windows_are_contexts_and_next_tokens():
    x, y = windows(torch.arange(10), 4)
    assert x.shape == (6, 4) and y.tolist() == list(range(4, 10)) and x[2].tolist() == [2, 3, 4, 5]
    with pytest.raises(SoftmaxlabError, match="no window"):
        windows(torch.arange(3), 4)
    with pytest.raises(SoftmaxlabError, match="too few"):
        build("one two")


def _lm(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lm.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_lm_benchmark_quick_end_to_end(tmp_path):
    text = tmp_path / "t.txt"
    torch.manual_seed(0)
    words = ["".join("abcdefghij"[int(c)] for c in f"{i:03d}") for i in range(200)]  # letters only: aaa, aab, ...
    ranks = torch.distributions.Categorical(1.0 / torch.arange(1, 201)).sample((6000,)).tolist()  # Zipfian
    text.write_text(" ".join(words[r] for r in ranks))
    out = tmp_path / "lm.json"
    p = _lm("--quick", "--text", str(text), "--json", str(out), "--plot", str(tmp_path / "lm.png"))
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    methods = [r["method"] for r in res["records"]]
    assert methods[0] == "full" and any(m.startswith("nce") for m in methods) and methods[-1].startswith("full, equal")
    for r in res["records"]:
        assert r["test"]["perplexity"] > 1 and r["ms_per_step"] > 0 and 0 <= r["test"]["top1"] <= r["test"]["top10"]
    assert (tmp_path / "lm.png").stat().st_size > 1000 and "| full |" in p.stdout


def test_lm_benchmark_without_the_corpus_says_how_to_install_and_exits_2(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no `bible` program on the PATH
    p = _lm("--quick", "--json", str(tmp_path / "x.json"), env=env)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    assert p.stderr.startswith("error: ") and "apt-get install bible-kjv" in p.stderr
    assert not (tmp_path / "x.json").exists()
