"""TensorFlow's candidate samplers under TF's names and return conventions (tf.random.*_candidate_sampler,
tf.nn.compute_accidental_hits), with TF's expected counts: K q when a draw took exactly K tries, else
1 - (1 - q)^T (core/kernels/range_sampler.cc, ExpectedCountHelper)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers.core import (
    LogUniformSampler,
    ProbsSampler,
    Sampler,
    UniformSampler,
    tf_expected_count,
)


class CandidateSample(NamedTuple):
    """What tf.random.*_candidate_sampler return; pass it as sampled_values to a sampled loss."""

    sampled_candidates: torch.Tensor
    """(K,) int64 ids."""
    true_expected_count: torch.Tensor
    """(B, num_true) float64: TF's expected count of each true class."""
    sampled_expected_count: torch.Tensor
    """(K,) float64: TF's expected count of each sampled id."""


def _candidates(sampler: Sampler, true_classes, num_true, num_sampled, unique, seed, generator) -> CandidateSample:
    y = torch.as_tensor(true_classes, device=sampler.device)
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 2 or y.shape[1] != num_true:
        raise SoftmaxlabError(f"true_classes must be integer ids of shape (B, num_true={num_true}), got "
                              f"{tuple(y.shape)} {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= sampler.num_classes):
        raise SoftmaxlabError(f"true_classes must lie in [0, range_max={sampler.num_classes}); fix the labels")
    if seed is not None:
        if generator is not None:
            raise SoftmaxlabError("pass seed or generator, not both")
        generator = torch.Generator(sampler.device).manual_seed(int(seed))
    draw = sampler.sample(num_sampled, generator=generator, unique=bool(unique))
    return CandidateSample(draw.ids, tf_expected_count(sampler.probs(y.long()), num_sampled, draw.num_tries),
                           tf_expected_count(sampler.probs(draw.ids), num_sampled, draw.num_tries))


def uniform_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max, seed=None, generator=None):
    """tf.random.uniform_candidate_sampler: K ids from q = 1 / range_max, with TF's expected counts (the draws
    themselves come from torch's generator, so they follow TF's law, not its random stream)."""
    return _candidates(UniformSampler(range_max), true_classes, num_true, num_sampled, unique, seed, generator)


def log_uniform_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max, seed=None,
                                  generator=None):
    """tf.random.log_uniform_candidate_sampler: Zipf q(k) = log((k + 2) / (k + 1)) / log(range_max + 1)."""
    return _candidates(LogUniformSampler(range_max), true_classes, num_true, num_sampled, unique, seed, generator)


def fixed_unigram_candidate_sampler(true_classes, num_true, num_sampled, unique, range_max, unigrams,
                                    distortion=1.0, num_reserved_ids=0, seed=None, generator=None):
    """tf.random.fixed_unigram_candidate_sampler with `unigrams` (a list of counts; vocab_file, num_shards and
    shard are not supported): ids [0, num_reserved_ids) have q = 0, then q_j proportional to unigrams ** distortion
    (C's pow, so a zero count with distortion 0 weighs 1, as in TF)."""
    u = torch.as_tensor(unigrams, dtype=torch.float64)
    if u.dim() != 1 or num_reserved_ids + u.numel() != range_max:
        raise SoftmaxlabError(f"range_max={range_max} must equal num_reserved_ids={num_reserved_ids} + "
                              f"len(unigrams)={u.numel() if u.dim() == 1 else tuple(u.shape)}; fix the vocabulary")
    if not bool(torch.isfinite(u).all()) or bool((u < 0).any()) or not math.isfinite(distortion):
        raise SoftmaxlabError("unigrams must be finite counts >= 0 and distortion finite; fix the counts")
    w = torch.cat([torch.zeros(num_reserved_ids, dtype=torch.float64), u.pow(distortion)])
    if float(w.sum()) <= 0:
        raise SoftmaxlabError("unigrams are all zero; pass at least one positive count")
    sampler = ProbsSampler(w / w.sum(), _validated=True)
    return _candidates(sampler, true_classes, num_true, num_sampled, unique, seed, generator)


def compute_accidental_hits(true_classes, sampled_candidates, num_true):
    """tf.nn.compute_accidental_hits: (indices int32, ids int64, weights float32 = -FLT_MAX), one entry per true
    label (row-major) found among the sampled ids, pointing at the id's *last* position, as TF's kernel does."""
    y = torch.as_tensor(true_classes)
    s = torch.as_tensor(sampled_candidates).reshape(-1)
    if y.dim() != 2 or y.shape[1] != num_true:
        raise SoftmaxlabError(f"true_classes must have shape (B, num_true={num_true}), got {tuple(y.shape)}")
    sorted_ids, perm = torch.sort(s, stable=True)  # copies keep their order, so the last copy sorts last
    yf = y.reshape(-1).to(s.dtype)
    hi = torch.searchsorted(sorted_ids, yf, right=True)  # (B*T,) one past the label's last copy
    found = (hi > 0) & (sorted_ids[(hi - 1).clamp(min=0)] == yf)
    rows = torch.arange(y.shape[0]).repeat_interleave(num_true)[found]
    last = perm[(hi - 1)[found]]
    return rows.int(), last.long(), torch.full(rows.shape, torch.finfo(torch.float32).min)
