"""Sampled softmax: closed forms against autograd, the Function against the closed forms, the issue's formulas
by hand, Monte Carlo bias of D, extreme logits in every dtype, sparse gradients, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from fakes import LargestTensor
from hypothesis import given, settings
from hypothesis import strategies as st

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled import (
    ESTIMATORS,
    SampledSoftmaxLoss,
    SampledValues,
    draw_sampled_values,
    sampled_softmax_grads,
    sampled_softmax_loss,
)
from softmaxlab.sampled import (
    reference_weights as _reference_weights,
)
from softmaxlab.samplers import LogUniformSampler, ProbsSampler, UniformSampler

f64 = torch.float64


def problem(B, d, C, T=1, seed=0, dtype=f64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g, dtype=dtype)
    W = torch.randn(C, d, generator=g, dtype=dtype)
    b = torch.randn(C, generator=g, dtype=dtype)
    y = torch.randint(0, C, (B, T), generator=g)
    return x, W, b, y


def function_grads(x, W, b, y, sv, estimator, hits=True, in_batch=False, reduction="mean", sampler=None):
    xs, Ws, bs = (t.clone().requires_grad_() for t in (x, W, b))
    if in_batch:
        loss = sampled_softmax_loss(xs, Ws, bs, y, None, sampler=sampler, estimator=estimator,
                                    remove_accidental_hits=hits, in_batch=True, reduction=reduction,
                                    num_true=y.shape[1])
    else:
        loss = sampled_softmax_loss(xs, Ws, bs, y, None, estimator=estimator, sampled_values=sv,
                                    remove_accidental_hits=hits, reduction=reduction, num_true=y.shape[1])
    loss.backward()
    return loss.detach(), Ws.grad, bs.grad, xs.grad


def autograd_of_reference(x, W, b, y, sv, estimator, hits=True, in_batch=False):
    """The reference loss log D - sum_j Y_j z_j - shift as a plain torch expression, differentiated by autograd."""
    xs, Ws, bs = (t.clone().requires_grad_() for t in (x, W, b))
    A, Y, shift = _reference_weights(estimator, y, sv, W.shape[0], hits, in_batch, x.dtype)
    z = xs @ Ws.T + bs
    loss = (torch.logsumexp(z + torch.log(A), 1) - (Y * z).sum(1) - shift).mean()
    loss.backward()
    return loss.detach(), Ws.grad, bs.grad, xs.grad


def assert_all_close(a, b, tol=1e-11):
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=tol)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(2, 5), d=st.integers(1, 4), C=st.integers(3, 9), K=st.integers(1, 12), T=st.integers(1, 3),
    estimator=st.sampled_from(ESTIMATORS),
    mode=st.sampled_from(["shared", "per_row", "unique", "per_row_unique", "in_batch"]),
    hits=st.sampled_from([True, False, "tf"]), seed=st.integers(0, 2**31 - 1),
)
def test_function_matches_closed_form_matches_autograd(B, d, C, K, T, estimator, mode, hits, seed):
    if mode == "in_batch":
        T = 1
    if mode == "unique":
        K = min(K, C - 1)
    C = max(C, 2 * T + 1)  # per-row draws need classes that are not true labels (else rejection can run long)
    if mode == "per_row_unique":
        K = min(K, C - T)
    x, W, b, y = problem(B, d, C, T, seed)
    sampler = ProbsSampler(torch.softmax(torch.randn(C, generator=torch.Generator().manual_seed(seed), dtype=f64), 0))
    g = torch.Generator().manual_seed(seed)
    sv = draw_sampled_values(y, None if mode == "in_batch" else K, sampler, shared=not mode.startswith("per_row"),
                             unique=mode.endswith("unique"), generator=g, in_batch=mode == "in_batch")
    ib = mode == "in_batch"
    closed = sampled_softmax_grads(x, W, b, y, sv, estimator, remove_accidental_hits=hits, in_batch=ib,
                                   with_dx=True)
    assert_all_close(closed, autograd_of_reference(x, W, b, y, sv, estimator, hits, ib))
    assert_all_close(closed, function_grads(x, W, b, y, sv, estimator, hits, ib, sampler=sampler))


def test_as_posed_per_row_formula_by_hand():
    """The issue's as-posed gradient: dl/dz_c = p_c - 1, dl/dz_j = (n_j / K) q_j e^{z_j} / D, 0 elsewhere."""
    x, W, b, _ = problem(2, 3, 5, seed=1)
    y = torch.tensor([[1], [3]])
    ids = torch.tensor([[0, 0, 2], [4, 1, 4]])  # per-row draws, true class excluded, with repeats
    q = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=f64)
    K = 3
    z = x @ W.T + b
    loss, G = 0.0, torch.zeros(2, 5, dtype=f64)
    for r in range(2):
        c = int(y[r, 0])
        D = math.exp(z[r, c]) + sum(float(q[j]) * math.exp(z[r, j]) for j in ids[r].tolist()) / K
        loss += (math.log(D) - float(z[r, c])) / 2
        G[r, c] += math.exp(z[r, c]) / D - 1
        for j in set(ids[r].tolist()):
            n_j = int((ids[r] == j).sum())
            G[r, j] += n_j / K * float(q[j]) * math.exp(z[r, j]) / D
    G /= 2
    sv = SampledValues(ids, K * q[y], K * q[ids] / (1 - q[y]), q[ids])
    expect = (torch.tensor(loss, dtype=f64), G.T @ x, G.sum(0), G @ W)
    assert_all_close(sampled_softmax_grads(x, W, b, y, sv, "as_posed", with_dx=True), expect, 1e-13)
    assert_all_close(function_grads(x, W, b, y, sv, "as_posed"), expect, 1e-13)


def test_importance_shared_with_hits_formula_by_hand():
    """Shared draws with the true class masked: D = e^{z_c} + (1/K) sum_{k: s_k != c} e^{z_{s_k}} / q_{s_k}."""
    x, W, b, _ = problem(2, 3, 5, seed=2)
    y = torch.tensor([[2], [0]])
    ids = torch.tensor([1, 2, 2, 4])  # row 0 hits class 2 twice
    q = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=f64)
    K = 4
    z = x @ W.T + b
    loss, G = 0.0, torch.zeros(2, 5, dtype=f64)
    for r in range(2):
        c = int(y[r, 0])
        neg = [j for j in ids.tolist() if j != c]
        D = math.exp(z[r, c]) + sum(math.exp(z[r, j]) / float(q[j]) for j in neg) / K
        loss += (math.log(D) - float(z[r, c])) / 2
        G[r, c] += math.exp(z[r, c]) / D - 1
        for j in neg:
            G[r, j] += math.exp(z[r, j]) / float(q[j]) / K / D
    G /= 2
    sv = SampledValues(ids, K * q[y], K * q[ids], q[ids])
    expect = (torch.tensor(loss, dtype=f64), G.T @ x, G.sum(0), G @ W)
    assert_all_close(sampled_softmax_grads(x, W, b, y, sv, "importance", with_dx=True), expect, 1e-13)
    assert_all_close(function_grads(x, W, b, y, sv, "importance"), expect, 1e-13)
    # without masking the hit is counted as a negative: a different (biased) loss
    assert abs(float(function_grads(x, W, b, y, sv, "importance", hits=False)[0]) - loss) > 1e-3


def test_logq_is_softmax_over_corrected_candidates_with_soft_labels():
    """TF's form: cross-entropy of [z_y - log Q_y, z_s - log Q_s (hits -> -inf)] with target 1/T per true label."""
    x, W, b, _ = problem(3, 4, 8, seed=3)
    y = torch.tensor([[1, 1], [2, 5], [7, 0]])  # a repeated label is kept twice, as TF does
    ids = torch.tensor([5, 3, 3, 6])
    Qs = torch.tensor([0.5, 0.7, 0.7, 0.2], dtype=f64)
    Qt = torch.tensor([[0.9, 0.9], [0.4, 0.5], [0.3, 0.8]], dtype=f64)
    z = x @ W.T + b
    o = torch.cat([z.gather(1, y) - Qt.log(), z[:, ids] - Qs.log()], 1)
    o[1, 2] = -torch.inf  # row 1 has label 5 = ids[0]
    expect = -torch.log_softmax(o, 1)[:, :2].mean(1)  # target 1/2 on each true column, 0 elsewhere
    got = sampled_softmax_loss(x, W, b, y, None, estimator="logq", num_true=2, reduction="none",
                               sampled_values=(ids, Qt, Qs))
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-13)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("mode", ["shared", "per_row", "in_batch"])
def test_function_gradcheck(estimator, mode):
    x, W, b, y = problem(4, 3, 6, 1, seed=4)
    sampler = UniformSampler(6)
    sv = draw_sampled_values(y, None if mode == "in_batch" else 7, sampler, shared=mode != "per_row",
                             generator=torch.Generator().manual_seed(4), in_batch=mode == "in_batch")
    if mode == "in_batch":
        def f(a, c, e):
            return sampled_softmax_loss(a, c, e, y, None, sampler=sampler, estimator=estimator, in_batch=True)
    else:
        def f(a, c, e):
            return sampled_softmax_loss(a, c, e, y, None, estimator=estimator, sampled_values=sv)
    assert torch.autograd.gradcheck(f, tuple(t.clone().requires_grad_() for t in (x, W, b)))


def test_reductions_and_upstream_gradient():
    x, W, b, y = problem(5, 3, 7, seed=5)
    sv = draw_sampled_values(y, 6, UniformSampler(7), generator=torch.Generator().manual_seed(5))
    per = sampled_softmax_loss(x, W, b, y, None, sampled_values=sv, reduction="none")
    assert per.shape == (5,)
    torch.testing.assert_close(sampled_softmax_loss(x, W, b, y, None, sampled_values=sv, reduction="sum"), per.sum())
    Ws = W.clone().requires_grad_()
    w = torch.arange(5, dtype=f64)
    (sampled_softmax_loss(x, Ws, b, y, None, sampled_values=sv, reduction="none") * w).sum().backward()
    Wr = W.clone().requires_grad_()
    A, Y, shift = _reference_weights("importance", y, sv, 7, True, False, f64)
    z = x @ Wr.T + b
    ((torch.logsumexp(z + A.log(), 1) - (Y * z).sum(1) - shift) * w).sum().backward()
    torch.testing.assert_close(Ws.grad, Wr.grad, rtol=0, atol=1e-12)


def _normalizer_draws(estimator, shared, n=4000, K=5, seed=6):
    """D_b = exp(loss_b + z_c) for n independent draws: (n, B) samples and the exact sum_j e^{z_j} (B,)."""
    x, W, b, y = problem(3, 2, 8, seed=seed)
    W = W * 0.7
    z = x @ W.T + b
    sampler = ProbsSampler(torch.softmax(torch.randn(8, generator=torch.Generator().manual_seed(1), dtype=f64), 0))
    g = torch.Generator().manual_seed(seed)
    Ds = []
    for _ in range(n):
        loss = sampled_softmax_loss(x, W, b, y, K, sampler=sampler, estimator=estimator, shared=shared,
                                    generator=g, reduction="none")
        Ds.append(torch.exp(loss + z.gather(1, y).squeeze(1)))
    return torch.stack(Ds), torch.exp(z).sum(1)


@pytest.mark.parametrize("shared", [True, False], ids=["shared_masked", "per_row_excluded"])
def test_importance_normalizer_is_unbiased(shared):
    D, Z = _normalizer_draws("importance", shared)
    mean, se = D.mean(0), D.std(0) / math.sqrt(D.shape[0])
    assert ((mean - Z).abs() < 3 * se).all(), (mean, Z, se)


def test_importance_normalizer_is_unbiased_for_per_row_unique_uniform_draws():
    """Per-row unique uniform draws have exact inclusion probabilities K / (C - 1): D is unbiased."""
    x, W, b, y = problem(3, 2, 8, seed=11)
    z = x @ (0.7 * W).T + b
    g, s = torch.Generator().manual_seed(11), UniformSampler(8)
    D = torch.stack([torch.exp(sampled_softmax_loss(x, 0.7 * W, b, y, 4, sampler=s, shared=False, unique=True,
                                                    generator=g, reduction="none") + z.gather(1, y).squeeze(1))
                     for _ in range(3000)])
    mean, se = D.mean(0), D.std(0) / math.sqrt(D.shape[0])
    assert ((mean - torch.exp(z).sum(1)).abs() < 3.5 * se).all()


def test_as_posed_normalizer_is_biased():
    D, Z = _normalizer_draws("as_posed", shared=False, n=1000)
    mean, se = D.mean(0), D.std(0) / math.sqrt(D.shape[0])
    assert ((Z - mean) > 20 * se).all()  # far below sum_j e^{z_j}: E[D] = e^{z_c} + sum_{j != c} q_j q'_j e^{z_j}


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shared", [True, False])
def test_extreme_logits_are_finite(estimator, dtype, shared):
    C, d = 50, 2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=dtype)
    W = torch.zeros(C, d, dtype=dtype)
    W[::2, 0], W[1::2, 0] = 1e4, -1e4  # logits of +/-1e4
    W[::3, 1], W[1::3, 1] = -1e4, 1e4
    b = torch.zeros(C, dtype=dtype)
    y = torch.tensor([1, 2, 0])
    Ws = W.clone().requires_grad_()
    xs = x.clone().requires_grad_()
    loss = sampled_softmax_loss(xs, Ws, b, y, 20, sampler=UniformSampler(C), estimator=estimator,
                                shared=shared, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert loss.dtype == (f64 if dtype == f64 else torch.float32)
    assert torch.isfinite(Ws.grad.float()).all() and torch.isfinite(xs.grad.float()).all()
    assert Ws.grad.dtype == dtype


def test_mixed_precision_matches_float64():
    x, W, b, y = problem(6, 5, 20, seed=7)
    sv = draw_sampled_values(y, 9, UniformSampler(20), generator=torch.Generator().manual_seed(7))
    ref = sampled_softmax_loss(x, W, b, y, None, sampled_values=sv)
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 5e-2), (torch.float16, 1e-2)]:
        Wd = W.float().requires_grad_()  # float32 master weights, low-precision activations
        loss = sampled_softmax_loss(x.to(dtype), Wd, b.float(), y, None, sampled_values=sv)
        loss.backward()
        assert Wd.grad.dtype == torch.float32
        assert abs(loss.item() - float(ref)) < tol * max(1.0, abs(float(ref)))


def test_sparse_gradients_with_sgd_and_sparseadam():
    x, W, b, y = problem(4, 3, 30, seed=8)
    x, W, b = x.float(), W.float(), b.float()
    sv = draw_sampled_values(y, 6, UniformSampler(30), generator=torch.Generator().manual_seed(8))
    dense_W, dense_b = torch.nn.Parameter(W.clone()), torch.nn.Parameter(b.clone())
    sparse_W, sparse_b = torch.nn.Parameter(W.clone()), torch.nn.Parameter(b.clone())
    opt_d = torch.optim.SGD([dense_W, dense_b], lr=0.3)
    opt_s = torch.optim.SGD([sparse_W, sparse_b], lr=0.3)
    for _ in range(3):
        for opt, Wp, bp, sparse in [(opt_d, dense_W, dense_b, False), (opt_s, sparse_W, sparse_b, True)]:
            opt.zero_grad()
            sampled_softmax_loss(x, Wp, bp, y, None, sampled_values=sv, sparse=sparse).backward()
            opt.step()
        assert sparse_W.grad.is_sparse and sparse_b.grad.is_sparse
    torch.testing.assert_close(sparse_W, dense_W, rtol=0, atol=1e-6)
    torch.testing.assert_close(sparse_b, dense_b, rtol=0, atol=1e-6)
    # SparseAdam touches only the gathered rows and lowers the loss
    Wp, bp = torch.nn.Parameter(W.clone()), torch.nn.Parameter(b.clone())
    opt = torch.optim.SparseAdam([Wp, bp], lr=0.05)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = sampled_softmax_loss(x, Wp, bp, y, None, sampled_values=sv, sparse=True)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    touched = torch.zeros(30, dtype=torch.bool)
    touched[sv.sampled_candidates] = True
    touched[y.flatten()] = True
    assert loss.item() < first
    assert torch.equal(Wp[~touched], W[~touched]) and not torch.equal(Wp[touched], W[touched])


@pytest.mark.parametrize("shared", [True, False])
def test_never_builds_a_batch_by_classes_tensor(shared):
    B, C, d = 16, 40_000, 2
    x, W = torch.randn(B, d), torch.randn(C, d, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    y = torch.randint(0, C, (B,))
    with LargestTensor() as spy:
        sampled_softmax_loss(x, W, b, y, 64, shared=shared, sparse=True).backward()
    assert spy.largest < C  # sparse: nothing class-sized at all (B * C = 640k)
    with LargestTensor() as spy:
        sampled_softmax_loss(x, W, b, y, 64, shared=shared).backward()
    assert spy.largest == C * d  # dense: only the (C, d) gradient itself


def test_default_sampler_unique_and_determinism():
    x, W, b, y = problem(8, 4, 1000, seed=9)
    a = sampled_softmax_loss(x, W, b, y, 50, unique=True, generator=torch.Generator().manual_seed(1))
    c = sampled_softmax_loss(x, W, b, y, 50, unique=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, c)
    s = LogUniformSampler(1000)
    sv = draw_sampled_values(y, 50, s, unique=True, generator=torch.Generator().manual_seed(1))
    assert sv.sampled_candidates.unique().numel() == 50 and sv.num_tries >= 50
    torch.testing.assert_close(a, sampled_softmax_loss(x, W, b, y, None, sampled_values=sv[:3]))


def test_in_batch_is_yi_et_al_logq():
    """In-batch negatives: softmax over the batch's labels with s(x_i, y_j) - log q_j, own column the positive."""
    x, W, b, _ = problem(5, 3, 10, seed=10)
    y = torch.tensor([3, 7, 3, 1, 9])
    q = torch.softmax(torch.randn(10, generator=torch.Generator().manual_seed(2), dtype=f64), 0)
    S = (x @ W.T + b)[:, y] - q[y].log()  # (B, B) corrected scores
    S[0, 2] = S[2, 0] = -torch.inf  # same label as the positive: accidental hits
    expect = (torch.logsumexp(S, 1) - S.diagonal()).mean()
    got = sampled_softmax_loss(x, W, b, y, None, sampler=ProbsSampler(q), estimator="logq", in_batch=True)
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-13)


def test_module_trains_and_evaluates_exactly():
    torch.manual_seed(0)
    C, d = 200, 8
    proto = torch.randn(C, d)
    y = torch.randint(0, C, (256,))
    x = proto[y] + 0.1 * torch.randn(256, d)
    m = SampledSoftmaxLoss(C, d, num_sampled=20, sampler="uniform")
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    m.eval()
    before = m(x, y).item()
    m.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        opt.zero_grad()
        m(x, y, generator=g).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = float(m(x, y))
        torch.testing.assert_close(m(x, y), F.cross_entropy(m.full_logits(x), y))
    assert after < 0.5 * before
    sm = SampledSoftmaxLoss(C, d, num_sampled=20, sparse=True, estimator="logq")
    sm(x, y).backward()
    assert sm.weight.grad.is_sparse


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_sampled=0), "num_sampled"),
        (dict(estimator="nce"), "unknown estimator"),
        (dict(reduction="avg"), "unknown reduction"),
        (dict(labels=torch.tensor([0, 1, 9])), "labels must lie"),
        (dict(labels=torch.tensor([0, 1, -1])), "labels must lie"),
        (dict(labels=torch.tensor([0, 1])), "labels must have shape"),
        (dict(labels=torch.tensor([[0, 1], [1, 2], [3, 4]])), "num_true"),
        (dict(labels=torch.tensor([0.0, 1.0, 2.0])), "integer"),
        (dict(weight=torch.randn(9, 3, dtype=f64)), "weight must be"),
        (dict(bias=torch.zeros(8, dtype=f64)), "bias must have shape"),
        (dict(inputs=torch.randn(3, 4, 1, dtype=f64)), "inputs must be"),
        (dict(sampler=UniformSampler(5)), "sampler covers"),
        (dict(sampler="zipf"), "unknown sampler"),
        (dict(num_sampled=9, unique=True, sampler="uniform"), "num_sampled < num_classes"),
        (dict(sampled_values=(torch.tensor([1, 2]), torch.ones(3, 1), torch.ones(3))), "sampled_expected_count"),
        (dict(sampled_values=(torch.tensor([1, 12]), torch.ones(3, 1), torch.ones(2))), "sampled_candidates"),
        (dict(sampled_values=(torch.tensor([1, 2]), torch.ones(2, 1), torch.ones(2))), "true_expected_count"),
        (dict(in_batch=True), "in_batch"),
        (dict(num_true=0), "num_true"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    args = dict(inputs=torch.randn(3, 4, dtype=f64), weight=torch.randn(9, 4, dtype=f64),
                bias=torch.zeros(9, dtype=f64), labels=torch.tensor([0, 1, 2]), num_sampled=4)
    args.update(kwargs)
    if "sampled_values" in kwargs:
        args["num_sampled"] = None
    if "weight" in kwargs:
        args["weight"] = kwargs["weight"][:, :3]
    with pytest.raises(SoftmaxlabError, match=match):
        sampled_softmax_loss(**args)


def test_named_gradient_checks_pass_and_can_fail(monkeypatch):
    from softmaxlab import gradcheck
    from softmaxlab.sampled import SampledSoftmaxXent

    rows = gradcheck.run_checks()
    assert len(rows) == 3 + 3 * len(gradcheck.MODES) * len(ESTIMATORS) + 3  # softmax, sampled, nce
    assert len({r["name"] for r in rows}) == len(rows)
    assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    assert max(r["max_abs_err"] for r in rows) <= 1e-10
    assert all(r["ok"] for r in gradcheck.run_checks(torch.float32))
    backward = SampledSoftmaxXent.backward

    def off_by_a_little(ctx, g):  # a backward that is wrong by 1e-6 relative
        return tuple(None if t is None else t * (1 + 1e-6) for t in backward(ctx, g))

    monkeypatch.setattr(SampledSoftmaxXent, "backward", staticmethod(off_by_a_little))
    bad = [r for r in gradcheck.run_checks() if not r["ok"]]
    assert {r["name"].split(".")[-1] for r in bad} == {"function_vs_closed_form", "finite_difference+gradcheck"}
