"""Proposal distributions q for sampled softmax (core.py), Walker's alias table (alias.py), and TensorFlow's
candidate samplers under TF's names (tf.py), and the model-adaptive KernelSampler (kernel.py)."""

from softmaxlab.samplers.core import (
    SAMPLERS,
    Draw,
    LogUniformSampler,
    ProbsSampler,
    Sampler,
    UniformSampler,
    UnigramSampler,
    make_sampler,
    tf_expected_count,
)
from softmaxlab.samplers.kernel import KernelSampler
from softmaxlab.samplers.tf import (
    CandidateSample,
    compute_accidental_hits,
    fixed_unigram_candidate_sampler,
    log_uniform_candidate_sampler,
    uniform_candidate_sampler,
)

__all__ = [
    "SAMPLERS", "CandidateSample", "Draw", "KernelSampler", "LogUniformSampler", "ProbsSampler", "Sampler",
    "UniformSampler", "UnigramSampler", "compute_accidental_hits", "fixed_unigram_candidate_sampler",
    "log_uniform_candidate_sampler", "make_sampler", "tf_expected_count", "uniform_candidate_sampler",
]
