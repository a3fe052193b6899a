"""KernelSampler: its q is the kernel's normalised values, its draws follow that q (chi-square), unique draws,
rebuilds, and its expected counts make the importance estimator unbiased (Monte Carlo)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled import sampled_softmax_loss
from softmaxlab.samplers import KernelSampler


def _problem(C=37, d=3, B=3, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, d, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64) if bias else None
    return W, b, torch.randn(B, d, generator=g, dtype=torch.float64), g


@pytest.mark.parametrize("bucket", [1, 4, 8, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_q_is_the_normalised_kernel(bucket, bias):
    W, b, h, _ = _problem(bias=bias)
    ks = KernelSampler(W, b, alpha=2.5, bucket=bucket)
    z = h @ W.T + (b if bias else 0)  # (B, C) the kernel's argument: h . w_j (+ b_j)
    kern = 2.5 * z ** 2 + 1
    q = ks.probs(h, torch.arange(W.shape[0]))
    assert torch.allclose(q, kern / kern.sum(1, keepdim=True), rtol=1e-12, atol=0)
    assert torch.allclose(q.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("bucket", [2, 8, 64])
def test_draws_follow_q(bucket):
    W, b, h, g = _problem(bias=True)
    ks = KernelSampler(W, b, alpha=4.0, bucket=bucket)
    n = 100_000
    ids = ks.sample(h, n, generator=g).ids
    q = ks.probs(h, torch.arange(W.shape[0]))
    for r in range(h.shape[0]):
        counts = torch.bincount(ids[r], minlength=W.shape[0]).double()
        assert stats.chisquare(counts.numpy(), (n * q[r]).numpy()).pvalue > 1e-3


def test_unique_draws_are_distinct_and_counted_by_inclusion():
    W, _, h, g = _problem(C=50)
    ks = KernelSampler(W, alpha=1.0, bucket=4)
    ids, Qt, Qs, q, tries = ks.sampled_values(h, torch.tensor([[0, 1], [2, 2], [3, 4]]), 20, generator=g,
                                              unique=True)
    assert ids.shape == (3, 20) and all(len(set(r.tolist())) == 20 for r in ids) and (tries >= 20).all()
    T = tries.double()[:, None]
    assert torch.allclose(Qs, 1 - (1 - q) ** T, rtol=1e-12)
    assert Qt.shape == (3, 2) and (Qt > 0).all() and (Qs <= 1).all()


def test_rebuild_follows_the_new_weights():
    W, _, h, _ = _problem()
    ks = KernelSampler(W, alpha=1.0, bucket=4)
    old = ks.probs(h, torch.arange(37))
    ks.rebuild(2 * W.flip(0))
    new = ks.probs(h, torch.arange(37))
    kern = 4 * (h @ W.flip(0).T) ** 2 + 1
    assert not torch.allclose(old, new) and torch.allclose(new, kern / kern.sum(1, keepdim=True), rtol=1e-12)


def test_importance_with_kernel_counts_is_unbiased():
    """E[D] = Z with D = e^{z_c} + sum_k m_k e^{z_{s_k}} / (K q(s_k | h)), hits masked: exact q makes it so."""
    W, b, h, g = _problem(C=23, d=4, B=4, bias=True)
    ks = KernelSampler(W, b, alpha=3.0, bucket=4)
    z = h @ W.T + b
    y = torch.tensor([0, 5, 5, 22])
    K, n = 6, 40_000
    hr = h.repeat(n, 1)  # (n 4, d): row r is example r % 4
    ids = ks.sample(hr, K, generator=g).ids  # (n 4, K)
    Q = K * ks.probs(hr, ids)
    zr, yr = z.repeat(n, 1), y.repeat(n)
    zs = zr.gather(1, ids)
    D = zr.gather(1, yr[:, None]).squeeze(1).exp() + torch.where(ids == yr[:, None], 0.0, zs.exp() / Q).sum(1)
    D = D.view(n, 4)
    Z = z.exp().sum(1)
    mean, se = D.mean(0), D.std(0) / math.sqrt(n)
    assert ((mean - Z).abs() < 4 * se).all(), (mean, Z, se)


def test_its_sampled_values_train_through_the_loss():
    W, b, h, g = _problem(C=40, d=5, B=6, bias=True)
    Wp, bp, x = W.clone().requires_grad_(), b.clone().requires_grad_(), h.clone().requires_grad_()
    ks = KernelSampler(W, b, alpha=1.0, bucket=8)
    y = torch.randint(0, 40, (6, 2), generator=g)
    sv = ks.sampled_values(h, y, 7, generator=g)
    for est in ("importance", "logq"):
        loss = sampled_softmax_loss(x, Wp, bp, y, 7, sampled_values=sv, estimator=est, num_true=2)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(Wp.grad).all() and Wp.grad.abs().sum() > 0
        Wp.grad = None


@pytest.mark.parametrize("kw,msg", [
    (dict(alpha=-1.0), "alpha must be"), (dict(alpha=math.nan), "alpha must be"), (dict(bucket=0), "bucket must"),
])
def test_bad_settings(kw, msg):
    W, _, _, _ = _problem()
    with pytest.raises(SoftmaxlabError, match=msg):
        KernelSampler(W, **kw)


def test_bad_inputs():
    W, _, h, _ = _problem()
    with pytest.raises(SoftmaxlabError, match="finite weights"):
        KernelSampler(W.clone().index_fill_(0, torch.tensor([3]), math.nan))
    with pytest.raises(SoftmaxlabError, match="bias must have shape"):
        KernelSampler(W, torch.zeros(5))
    ks = KernelSampler(W)
    with pytest.raises(SoftmaxlabError, match=r"h must be \(B, 3\)"):
        ks.sample(torch.zeros(2, 4), 3)
    with pytest.raises(SoftmaxlabError, match="num_sampled"):
        ks.sample(h, 37, unique=True)


def test_bias_study_rows_put_the_kernel_beside_fixed_proposals():
    from softmaxlab.kernel_bias import kernel_bias_study

    rows = kernel_bias_study(classes=600, samples=(8,), n_draws=60, n_examples=16)
    got = {(r["sampler"], r["estimator"]): r for r in rows}
    assert set(got) == {(s, e) for s in ("loguniform", "unigram", "kernel") for e in ("importance", "logq")}
    # the adaptive proposal is closer to exp(z) than the index-ordered log-uniform one
    assert abs(got["kernel", "importance"]["loss_bias"]) < abs(got["loguniform", "importance"]["loss_bias"])
    assert all(r["draw_ms"] > 0 and r["n_draws"] == 60 for r in rows)


def test_projected_kernel_is_exact_for_its_own_q():
    W, b, h, g = _problem(C=30, d=12, B=2, bias=True)
    ks = KernelSampler(W, b, alpha=2.0, bucket=4, rank=5, seed=3)
    zp = (torch.cat([h, torch.ones(2, 1, dtype=torch.float64)], 1) @ ks.P.T) @ ks.W[:30].T  # (P h) . (P w_j)
    kern = 2.0 * zp ** 2 + 1
    q = ks.probs(h, torch.arange(30))
    assert torch.allclose(q, kern / kern.sum(1, keepdim=True), rtol=1e-12)
    ids = ks.sample(h, 60_000, generator=g).ids
    assert stats.chisquare(torch.bincount(ids[0], minlength=30).double().numpy(), (60_000 * q[0]).numpy()).pvalue > 1e-3
