"""The sampled softmax's fast paths give the plain path's numbers: repeated draws scored once
(candidates.collapse_repeats), the softmax of the sampled block fused and its sum read from its largest entry,
the bias added in the GEMM, db computed as one more column of dW's GEMM (sampled_kernels.py).

Each case computes the same loss and gradients two ways and compares them (float64 unless the dtype is the
point); speed is measured in benchmarks/, never here."""

import pytest
import torch

import softmaxlab.candidates as candidates
from softmaxlab.candidates import collapse_repeats
from softmaxlab.sampled import (
    ESTIMATORS,
    SampledSoftmaxLoss,
    SampledValues,
    sampled_softmax_grads,
    sampled_softmax_loss,
)

f64 = torch.float64


def problem(B=6, d=5, C=9, T=1, dtype=f64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, W, b = (torch.randn(*s, generator=g, dtype=dtype) for s in ((B, d), (C, d), (C,)))
    return x, W, b, torch.randint(0, C, (B, T), generator=g)


def repeated_values(y, C, counts_equal=True, seed=0):
    """Shared draws with repeats, two of them of a true label; counts per position (equal or not per id)."""
    ids = torch.cat([y[:2, 0], y[:2, 0], torch.tensor([0, 0, 0, 1, C - 1, C - 1])])  # (10,)
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(C, generator=g, dtype=f64) + 0.1
    Qs = base[ids] if counts_equal else torch.rand(ids.shape, generator=g, dtype=f64) + 0.1
    return SampledValues(ids, base[y], Qs)


def run(x, W, b, y, sv, grads=(True, True, True), **kw):
    xs, Ws, bs = (t.clone().requires_grad_(r) for t, r in zip((x, W, b), grads))
    loss = sampled_softmax_loss(xs, Ws, bs, y, None, sampled_values=sv, num_true=y.shape[1], reduction="none",
                                **kw)
    loss.sum().backward()
    dense = lambda g: None if g is None else (g.to_dense() if g.is_sparse else g)
    return [loss.detach(), dense(xs.grad), dense(Ws.grad), dense(bs.grad)]


def plain(monkeypatch, *args, **kw):
    """The same call with every copy of a repeated id scored on its own."""
    with monkeypatch.context() as m:
        m.setattr(candidates, "collapse_repeats", lambda ids, beta: None)
        return run(*args, **kw)


def assert_same(a, b, tol):
    for u, v in zip(a, b):
        assert (u is None) == (v is None)
        if u is not None:
            torch.testing.assert_close(u, v, rtol=tol, atol=tol)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("hits", [True, False])
@pytest.mark.parametrize("T", [1, 2])
@pytest.mark.parametrize("counts_equal", [True, False])
@pytest.mark.parametrize("sparse", [True, False])
def test_collapsed_repeats_equal_every_copy(monkeypatch, estimator, hits, T, counts_equal, sparse):
    x, W, b, y = problem(T=T)
    sv = repeated_values(y, W.shape[0], counts_equal)
    kw = dict(estimator=estimator, remove_accidental_hits=hits, sparse=sparse)
    assert_same(run(x, W, b, y, sv, **kw), plain(monkeypatch, x, W, b, y, sv, **kw), 1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_collapsed_repeats_in_low_precision(monkeypatch, dtype, tol):
    x, W, b, y = problem(B=16, d=8, C=12, dtype=dtype)
    sv = repeated_values(y, 12)
    assert_same(run(x, W, b, y, sv), plain(monkeypatch, x, W, b, y, sv), tol)


def test_collapse_scores_each_id_once():
    x, W, b, y = problem()
    sv = repeated_values(y, W.shape[0])
    Ws = W.clone().requires_grad_()
    sampled_softmax_loss(x, Ws, b, y, None, sampled_values=sv, sparse=True).backward()
    assert Ws.grad._nnz() == y.numel() + sv.sampled_candidates.unique().numel()  # B T true rows + K_u sampled
    ids, beta = collapse_repeats(torch.tensor([3, 1, 3, 3]), torch.tensor([0.5, 2.0, 0.5, 0.5], dtype=f64))
    assert ids.tolist() == [1, 3]
    torch.testing.assert_close(beta, torch.tensor([2.0, 0.5 + torch.log(torch.tensor(3.0)).item()], dtype=f64))
    assert collapse_repeats(torch.tensor([2, 0, 1]), torch.zeros(3, dtype=f64)) is None


def test_tf_rule_keeps_every_copy(monkeypatch):
    """TF's rule masks only the last copy of a sampled true label: repeats are not collapsed, and the numbers
    are the plain path's exactly."""
    calls = []
    monkeypatch.setattr(candidates, "collapse_repeats", lambda ids, beta: calls.append(1))
    x, W, b, y = problem()
    run(x, W, b, y, repeated_values(y, W.shape[0]), estimator="logq", remove_accidental_hits="tf")
    assert calls == []


@pytest.mark.parametrize("grads", [(True, False, False), (False, True, False), (False, False, True),
                                   (False, True, True), (True, True, True)])
@pytest.mark.parametrize("dtype", [f64, torch.float32])
def test_every_subset_of_gradients_matches_the_closed_form(grads, dtype):
    """dx, dW and db alone and together (db rides in dW's GEMM when both are wanted, alone it is a GEMV)."""
    x, W, b, y = problem(B=7, d=4, C=11, dtype=dtype)
    sv = repeated_values(y, 11)
    loss, dx, dW, db = run(x, W, b, y, sv, grads=grads, remove_accidental_hits=True)
    ref = sampled_softmax_grads(x.double(), W.double(), b.double(), y, sv, with_dx=True, reduction="sum")
    tol = 1e-12 if dtype == f64 else 1e-5
    for got, want, on in zip((dx, dW, db), (ref[3], ref[1], ref[2]), grads):
        assert (got is not None) == on
        if on:
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_row_whose_every_draw_is_masked():
    """K = 2 draws, both the row's true label: that row's sampled block is empty (the fused softmax sees a row
    of finfo.min), its loss is exactly 0 and its gradients vanish, as in the closed form."""
    x, W, b, _ = problem(B=2, C=5)
    y = torch.tensor([[3], [1]])
    sv = SampledValues(torch.tensor([3, 3]), torch.full((2, 1), 0.5, dtype=f64), torch.full((2,), 0.5, dtype=f64))
    loss, dx, dW, db = run(x, W, b, y, sv)
    assert loss[0].item() == 0.0 and dx[0].abs().max().item() == 0.0
    ref = sampled_softmax_grads(x, W, b, y, sv, with_dx=True, reduction="sum")
    torch.testing.assert_close(dW, ref[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.sum(), ref[0], rtol=1e-12, atol=1e-12)


def direct_loss(x, W, b, y, sv):
    """Importance, hits masked, T = 1, written as torch's logsumexp over every copy of the candidates."""
    ids = sv.sampled_candidates
    z = x @ W.T + b  # (B, C)
    v = z[:, ids] - torch.log(sv.sampled_expected_count).to(x.dtype)  # (B, K)
    v = v.masked_fill(ids[None, :] == y, float("-inf"))
    u = z.gather(1, y)  # (B, 1)
    return torch.logsumexp(torch.cat([u, v], 1), 1) - u[:, 0]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
@pytest.mark.parametrize("dtype", [f64, torch.float32])
def test_extreme_logits_match_autograd(scale, dtype):
    """The log-sum-exp from the fused softmax's largest entry holds from tiny to +-1e4 logits."""
    x, W, b, y = problem(B=5, d=3, C=13, dtype=dtype, seed=3)
    x = x * scale
    sv = repeated_values(y, 13)
    got = run(x, W, b, y, sv)
    xs, Ws, bs = (t.double().requires_grad_() for t in (x, W, b))
    want = direct_loss(xs, Ws, bs, y, sv)
    want.sum().backward()
    assert all(torch.isfinite(t).all() for t in got)
    tol = 1e-10 if dtype == f64 else 1e-5
    for g, w in zip(got, (want.detach(), xs.grad, Ws.grad, bs.grad)):
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol * max(1.0, w.abs().max().item()))


def test_module_default_draws_repeat_and_match_the_plain_path(monkeypatch):
    """The default module (log-uniform draws with replacement) collapses its repeats; same numbers as scoring
    every copy, with the same generator seed."""
    torch.manual_seed(0)
    head = SampledSoftmaxLoss(50, 4, num_sampled=64).double()
    x, y = torch.randn(8, 4, dtype=f64), torch.randint(0, 50, (8,))

    def step():
        head.zero_grad()
        loss = head(x, y, generator=torch.Generator().manual_seed(1))
        loss.backward()
        return [loss.detach(), head.weight.grad.clone(), head.bias.grad.clone()]

    fast = step()
    with monkeypatch.context() as m:
        m.setattr(candidates, "collapse_repeats", lambda ids, beta: None)
        slow = step()
    assert_same(fast, slow, 1e-12)
