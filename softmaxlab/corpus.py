"""A real English corpus for the sampled-softmax language model (benchmarks/lm.py): the King James Bible
(public domain), installed by Debian's `bible-kjv` package, read through its `bible` program, never committed.

Tokens: lower case, words (letters with inner apostrophes) and single punctuation marks, the verse
references dropped. Split by position into train / valid / test (80 / 10 / 10 %, contiguous). The vocabulary
is every type of the training split plus <unk> (id 0 is the most frequent type: ids are sorted by training
frequency, ties alphabetically, so a log-uniform proposal over ids follows Zipf's law), <unk> last.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

import torch

from softmaxlab.errors import SoftmaxlabError

INSTALL = "apt-get install bible-kjv (Debian's package of the King James Bible and its `bible` reader)"
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[^\sa-z0-9]")
_VERSE_REF = re.compile(r"^\s*\S+\d+:\d+\s+", re.MULTILINE)  # "Ge1:1 " at the start of every verse
SPLIT = (0.8, 0.1)  # train, valid fractions; test is the rest


@dataclass(frozen=True)
class Corpus:
    """Token ids of the three splits and the vocabulary."""

    train: torch.Tensor
    """(N_train,) int64 ids."""
    valid: torch.Tensor
    """(N_valid,) int64 ids."""
    test: torch.Tensor
    """(N_test,) int64 ids."""
    vocab: tuple[str, ...]
    """Types by id: sorted by training frequency (then alphabetically), <unk> last."""
    counts: torch.Tensor
    """(V,) training counts per id (<unk>: the count of unknown tokens in the training split, i.e. 0)."""

    @property
    def unk(self) -> int:
        return len(self.vocab) - 1


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(_VERSE_REF.sub("", text).lower())


def build(text: str, split=SPLIT) -> Corpus:
    """Tokenise, split by position, and map to ids with the training split's vocabulary."""
    tokens = tokenize(text)
    n = len(tokens)
    a, b = int(split[0] * n), int((split[0] + split[1]) * n)
    if a < 1 or b <= a or b >= n:
        raise SoftmaxlabError(f"the text has {n} tokens, too few to split {split}; pass a longer text")
    freq = Counter(tokens[:a])
    vocab = tuple(sorted(freq, key=lambda w: (-freq[w], w))) + ("<unk>",)
    index = {w: i for i, w in enumerate(vocab)}
    unk = len(vocab) - 1

    def ids(part):
        return torch.tensor([index.get(w, unk) for w in part], dtype=torch.long)

    counts = torch.tensor([freq.get(w, 0) for w in vocab], dtype=torch.long)
    return Corpus(ids(tokens[:a]), ids(tokens[a:b]), ids(tokens[b:]), vocab, counts)


def kjv_text() -> str:
    """The whole King James Bible as text, from the `bible` program; a one-line error saying how to install."""
    exe = shutil.which("bible")
    if exe is None:
        raise SoftmaxlabError(f"the King James Bible corpus is not installed: {INSTALL}")
    p = subprocess.run([exe, "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, timeout=120)
    if p.returncode != 0 or len(p.stdout) < 10**6:
        raise SoftmaxlabError(f"`bible` printed no full text (exit {p.returncode}); reinstall it: {INSTALL}")
    return p.stdout


def windows(ids: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N - context, context) contexts and (N - context,) next-token targets, as views (no copy of the text)."""
    if ids.numel() <= context:
        raise SoftmaxlabError(f"a split of {ids.numel()} tokens has no window of {context} + 1")
    return ids.unfold(0, context, 1)[:-1], ids[context:]
