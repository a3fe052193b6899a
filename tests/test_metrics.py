"""exact_metrics (chunked log-sum-exp and running top-k) against the dense computation on the full logits."""

import math

import pytest
import torch
from fakes import LargestTensor

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.metrics import exact_metrics
from softmaxlab.sampled import SampledSoftmaxLoss


def dense(x, W, b, y, ks=(1, 5, 10)):
    z = x @ W.T + (b if b is not None else 0)
    z = z.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    nll = (torch.logsumexp(z, 1) - z.gather(1, y[:, None]).squeeze(1)).double()
    out = {"loss": float(nll.mean()), "perplexity": math.exp(float(nll.mean()))}
    for k in ks:
        out[f"top{k}"] = float((torch.topk(z, k, 1).indices == y[:, None]).any(1).double().mean())
    return out


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 1e-6)])
@pytest.mark.parametrize("C,chunk", [(1000, 1), (1000, 10), (1000, 77), (1001, 1000), (997, None), (50, 1)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_dense_computation(dtype, rtol, C, chunk, bias):
    g = torch.Generator().manual_seed(C + (chunk or 0))
    B, d = 33, 8
    x, W = torch.randn(B, d, generator=g).to(dtype), (2 * torch.randn(C, d, generator=g)).to(dtype)
    b = torch.randn(C, generator=g).to(dtype) if bias else None
    y = torch.randint(0, C, (B,), generator=g)
    ks = (1, 5, 10)
    got, want = exact_metrics(x, W, b, y, topk=ks, chunk_size=chunk), dense(x, W, b, y, ks)
    assert got["loss"] == pytest.approx(want["loss"], rel=rtol)
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=10 * rtol)
    if dtype != torch.bfloat16:  # bf16 logits tie often: decisions may differ there, and only there
        for k in ks:
            assert got[f"top{k}"] == want[f"top{k}"]


def test_ties_only_where_logits_are_exactly_equal():
    """Every logit equal: the label is in the top-1 of 1000 for torch.topk's arbitrary pick, not for ours alone."""
    x, W = torch.ones(4, 2), torch.ones(10, 2)
    y = torch.tensor([0, 3, 7, 9])
    got = exact_metrics(x, W, None, y, topk=(1, 10), chunk_size=3)
    assert got["top10"] == 1.0 and got["loss"] == pytest.approx(math.log(10))


def test_memory_is_batch_by_chunk_not_batch_by_classes():
    B, C, d, chunk = 16, 20000, 4, 500
    x, W, y = torch.randn(B, d), torch.randn(C, d), torch.randint(0, C, (B,))
    with LargestTensor() as probe:
        exact_metrics(x, W, None, y, chunk_size=chunk)
    assert probe.largest <= max(B * chunk, C * d)  # the weight itself is the largest tensor
    assert probe.largest < B * C


def test_module_exposes_it():
    head = SampledSoftmaxLoss(300, 8, 16)
    x, y = torch.randn(20, 8), torch.randint(0, 300, (20,))
    got = head.metrics(x, y, chunk_size=64)
    assert got["loss"] == pytest.approx(float(head.eval()(x, y)), rel=1e-6)


@pytest.mark.parametrize("kw,match", [(dict(topk=(0,)), "topk"), (dict(chunk_size=0), "chunk_size"),
                                      (dict(labels=torch.tensor([5])), "shape"),
                                      (dict(labels=torch.tensor([0, 99])), "lie in")])
def test_bad_input(kw, match):
    args = dict(inputs=torch.randn(2, 3), weight=torch.randn(10, 3), bias=None, labels=torch.tensor([0, 1]))
    args.update(kw)
    with pytest.raises(SoftmaxlabError, match=match):
        exact_metrics(**args)
