"""TensorFlow's candidate samplers under TF's names, compute_accidental_hits, and the tf_compat switch, checked
without TensorFlow: against TF's formulas written out in numpy (range_sampler.cc, candidate_sampler_ops.cc)."""

import numpy as np
import pytest
import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled import SampledSoftmaxLoss, sampled_softmax_loss
from softmaxlab.samplers import (
    LogUniformSampler,
    ProbsSampler,
    UniformSampler,
    compute_accidental_hits,
    fixed_unigram_candidate_sampler,
    log_uniform_candidate_sampler,
    uniform_candidate_sampler,
)


def tf_count(p: np.ndarray, K: int, T: int) -> np.ndarray:
    """ExpectedCountHelper from TF's range_sampler.cc, in float64."""
    return p * K if T == K else -np.expm1(T * np.log1p(-p))


def numpy_probs(name, C, ids, unigrams=None, distortion=1.0, reserved=0):
    ids = np.asarray(ids, dtype=np.float64)
    if name == "log_uniform":
        return np.log1p(1.0 / (ids + 1.0)) / np.log1p(C)  # log((k + 2) / (k + 1)) / log(C + 1), accurately
    if name == "uniform":
        return np.full(ids.shape, 1.0 / C)
    w = np.concatenate([np.zeros(reserved), np.asarray(unigrams, dtype=np.float64) ** distortion])
    return (w / w.sum())[ids.astype(np.int64)]


CONFIGS = [  # (name, C, K), sized so that some of the 40 draws collide (T > K) and some do not (T == K)
    ("log_uniform", 2000, 4), ("log_uniform", 300, 6), ("uniform", 60, 6), ("uniform", 200, 12),
    ("fixed_unigram", 400, 6), ("fixed_unigram", 60, 4),
]


@pytest.mark.parametrize("name,C,K", CONFIGS)
def test_tf_named_samplers_return_tfs_expected_counts_in_both_branches(name, C, K):
    rng = np.random.default_rng(C + K)
    reserved, distortion = (2, 0.75) if name == "fixed_unigram" else (0, 1.0)
    unigrams = rng.integers(1, 30, size=C - reserved).tolist()
    if name == "fixed_unigram":
        base = ProbsSampler(torch.from_numpy(numpy_probs(name, C, range(C), unigrams, distortion, reserved)))
    else:
        base = LogUniformSampler(C) if name == "log_uniform" else UniformSampler(C)
    branches = set()
    for seed in range(40):
        y = torch.from_numpy(rng.integers(reserved, C, size=(3, 2)))
        draw = base.sample(K, generator=torch.Generator().manual_seed(seed), unique=True)  # the same stream
        if name == "log_uniform":
            got = log_uniform_candidate_sampler(y, 2, K, True, C, seed=seed)
        elif name == "uniform":
            got = uniform_candidate_sampler(y, 2, K, True, C, seed=seed)
        else:
            got = fixed_unigram_candidate_sampler(y, 2, K, True, C, unigrams, distortion, reserved, seed=seed)
        assert torch.equal(got.sampled_candidates, draw.ids)
        T = int(draw.num_tries)
        branches.add(T == K)
        for ids, Q in ((got.sampled_candidates, got.sampled_expected_count), (y, got.true_expected_count)):
            want = tf_count(numpy_probs(name, C, ids.numpy(), unigrams, distortion, reserved), K, T)
            np.testing.assert_allclose(Q.numpy(), want, rtol=1e-12, atol=0)
    assert branches == {True, False}, f"{name} C={C} K={K}: only T == K is {branches}"


def test_with_replacement_counts_are_k_q():
    y = torch.tensor([[0], [7]])
    got = log_uniform_candidate_sampler(y, 1, 50, False, 20, seed=0)
    assert len(set(got.sampled_candidates.tolist())) < 50  # repeats
    np.testing.assert_allclose(got.true_expected_count.numpy(), 50 * numpy_probs("log_uniform", 20, y.numpy()),
                               rtol=1e-12)


def test_compute_accidental_hits_points_at_the_last_copy_row_major():
    idx, ids, w = compute_accidental_hits(torch.tensor([[2, 5], [4, 4], [2, 2]]), torch.tensor([2, 1, 2, 5, 4]), 2)
    assert idx.tolist() == [0, 0, 1, 1, 2, 2] and ids.tolist() == [2, 3, 4, 4, 2, 2]
    assert idx.dtype == torch.int32 and ids.dtype == torch.int64 and w.dtype == torch.float32
    assert (w == torch.finfo(torch.float32).min).all()


def test_fixed_unigram_checks_the_vocabulary_size():
    with pytest.raises(SoftmaxlabError, match="range_max=10 must equal num_reserved_ids=1"):
        fixed_unigram_candidate_sampler(torch.tensor([[1]]), 1, 2, True, 10, [1.0] * 8, num_reserved_ids=1)
    with pytest.raises(SoftmaxlabError, match="true_classes must lie in"):
        log_uniform_candidate_sampler(torch.tensor([[10]]), 1, 2, True, 10)
    with pytest.raises(SoftmaxlabError, match="seed or generator"):
        log_uniform_candidate_sampler(torch.tensor([[1]]), 1, 2, True, 10, seed=0, generator=torch.Generator())


def test_tf_compat_uses_tfs_counts_and_hit_rule():
    """SampledSoftmaxLoss(tf_compat=True) == the functional loss on the TF-named sampler's values with TF's rule."""
    torch.manual_seed(0)
    C, d, B, K = 5000, 4, 6, 3  # large C, small K: the draw has no collision, so T == K (TF's K q)
    head = SampledSoftmaxLoss(C, d, K, estimator="logq", unique=True, tf_compat=True).double()
    x, y = torch.randn(B, d, dtype=torch.float64), torch.randint(0, C, (B,))
    got = head(x, y, generator=torch.Generator().manual_seed(3))
    sv = log_uniform_candidate_sampler(y[:, None], 1, K, True, C, seed=3)
    want = sampled_softmax_loss(x, head.weight, head.bias, y, None, estimator="logq", sampled_values=sv,
                                remove_accidental_hits="tf")
    torch.testing.assert_close(got, want, rtol=1e-14, atol=0)
    plain = SampledSoftmaxLoss(C, d, K, estimator="logq", unique=True).double()
    plain.load_state_dict(head.state_dict())
    assert not torch.allclose(plain(x, y, generator=torch.Generator().manual_seed(3)), got)  # other counts
    with pytest.raises(SoftmaxlabError, match="estimator='logq'"):
        SampledSoftmaxLoss(C, d, K, tf_compat=True)
    with pytest.raises(SoftmaxlabError, match="shared"):
        sampled_softmax_loss(x, head.weight, head.bias, y, K, estimator="logq", tf_compat=True, shared=False)
