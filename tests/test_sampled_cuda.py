"""The sampled losses on CUDA against the CPU: the same sampled values give the same losses and gradients;
draws made on the GPU (closed-form and alias-table samplers, unique and with replacement) are valid ids with
their counts. Skipped without a GPU (the CI machines have none)."""

import pytest
import torch

from softmaxlab.sampled import SampledSoftmaxLoss, nce_loss, sampled_softmax_loss
from softmaxlab.samplers import LogUniformSampler, UnigramSampler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (optional: GPU machines only)")
C, D, B, K = 500, 16, 32, 64


def problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x, W, b = (torch.randn(*s, generator=g, dtype=dtype) for s in ((B, D), (C, D), (C,)))
    y = torch.randint(0, C, (B, 2), generator=g)
    return x, W, b, y


def run(fn, dev, x, W, b, y, **kw):
    ts = [t.to(dev).requires_grad_() for t in (x, W, b)]
    loss = fn(*ts, y.to(dev), None, reduction="sum", num_true=2, **kw)
    loss.backward()
    return [loss.detach().cpu()] + [t.grad.to_dense().cpu() if t.grad.is_sparse else t.grad.cpu() for t in ts]


@pytest.mark.parametrize("sampler", ["loguniform", "unigram"])
@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("hits", [True, False, "tf"])
@pytest.mark.parametrize("loss", ["softmax_logq", "softmax_importance", "nce"])
def test_cuda_matches_cpu_on_the_same_samples(sampler, unique, hits, loss):
    x, W, b, y = problem()
    s = LogUniformSampler(C) if sampler == "loguniform" else UnigramSampler(torch.arange(1, C + 1) ** 1.0)
    d = s.sample(K, generator=torch.Generator().manual_seed(1), unique=unique)
    sv = (d.ids, s.expected_count(y, K, unique, d.num_tries), s.expected_count(d.ids, K, unique, d.num_tries))
    fn = nce_loss if loss == "nce" else sampled_softmax_loss
    kw = dict(sampled_values=sv, remove_accidental_hits=hits)
    if loss != "nce":
        kw["estimator"] = loss.split("_")[1]
    cpu = run(fn, "cpu", x, W, b, y, **kw)
    gpu = run(fn, "cuda", x, W, b, y, sampled_values=tuple(t.cuda() for t in sv),
              **{k: v for k, v in kw.items() if k != "sampled_values"})
    for a, g in zip(cpu, gpu):
        torch.testing.assert_close(g, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sampler", ["loguniform", "unigram"])
@pytest.mark.parametrize("unique", [False, True])
def test_draws_on_cuda_are_valid(sampler, unique):
    s = LogUniformSampler(C) if sampler == "loguniform" else UnigramSampler(torch.arange(1, C + 1) ** 1.0)
    s.to("cuda")
    d = s.sample(K, generator=torch.Generator("cuda").manual_seed(0), unique=unique)
    assert d.ids.device.type == "cuda" and int(d.ids.min()) >= 0 and int(d.ids.max()) < C
    if unique:
        assert d.ids.unique().numel() == K
    head = SampledSoftmaxLoss(C, D, K, sampler=s, unique=unique).cuda()
    x, _, _, y = problem(torch.float32)
    head(x.cuda(), y[:, 0].cuda()).backward()
    assert head.weight.grad.layout == torch.strided and torch.isfinite(head.weight.grad).all()
