"""Mixed negatives (softmaxlab/mixed.py, docs/derivations.md section 12): in-batch + proposal + hard negatives.

The dense closed form here is written from the derivation and computes every expected count from the raw
sources itself (the batch's labels, the proposal's draws, the hard negatives), not from mixed.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from softmaxlab.bias import bias_study
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mixed import FrequencyEstimator, mixed_sampled_values
from softmaxlab.sampled import SampledSoftmaxLoss, nce_loss, sampled_softmax_loss
from softmaxlab.sampled_reference import sampled_softmax_grads
from softmaxlab.samplers import ProbsSampler

C, B, K, D = 12, 6, 4, 5
HARD = {"none": None, "shared": torch.tensor([3, 3, 7]), "per_row": "per_row"}


def problem(seed=0, hard="none"):
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    q = ProbsSampler(torch.softmax(0.5 * torch.randn(C, generator=g, dtype=torch.float64), 0))
    y = torch.multinomial(pi, B, replacement=True, generator=g)
    x = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(C, D, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, generator=g, dtype=torch.float64, requires_grad=True)
    h = torch.randint(0, C, (B, 2), generator=g) if hard == "per_row" else HARD[hard]
    h = torch.cat([h[:, :1], y[:, None]], 1) if hard == "per_row" else h  # a row's own label as a hard negative
    return pi, q, y, x, W, b, h


def dense_loss(x, W, b, y, pi, q, draws, hard, estimator):
    """loss_b = log D_b - z_bc (+ log Q_c for logq), D_b = [e^{z_c} or e^{z_c}/Q_c] + sum_{j != c} N_bj e^{z_bj} / Q_bj,
    N_bj = copies of j among [labels, draws, hard], Q_bj = (B - 1) pi_j + K q_j + copies of j among the hard ones."""
    z = x @ W.T + b  # (B, C)
    N = (F.one_hot(y, C).sum(0) + F.one_hot(draws, C).sum(0)).double().expand(B, C)  # (B, C)
    H = torch.zeros(B, C, dtype=torch.float64)
    if hard is not None:
        H = F.one_hot(hard, C).sum(-2).double().expand(B, C)
    N, Q = N + H, (B - 1) * pi + K * q.q + H  # (B, C)
    own = F.one_hot(y, C).bool()
    Qc = Q[own]  # (B,)
    w = torch.where(own, 1.0 / Qc[:, None] if estimator == "logq" else 1.0, N / Q)  # hits masked: own column
    D_ = (w * z.exp()).sum(1)
    loss = D_.log() - z[own] + (Qc.log() if estimator == "logq" else 0.0)
    return loss.mean()


def grads(loss, *ts):
    return torch.autograd.grad(loss, ts)


@pytest.mark.parametrize("hard", list(HARD))
@pytest.mark.parametrize("estimator", ["importance", "logq"])
def test_mixed_loss_and_gradients_match_dense_closed_form_under_autograd(estimator, hard):
    pi, q, y, x, W, b, h = problem(1, hard)
    sv = mixed_sampled_values(y, K, q, pi, hard_negatives=h, generator=torch.Generator().manual_seed(5))
    draws = q.sample(K, generator=torch.Generator().manual_seed(5)).ids  # the same K draws
    want = dense_loss(x, W, b, y, pi, q, draws, h, estimator)
    got = sampled_softmax_loss(x, W, b, y, None, estimator=estimator, sampled_values=sv)
    assert abs(float(got.detach() - want.detach())) < 1e-12
    g_want = grads(want, x, W, b)
    for g1, g2 in zip(grads(got, x, W, b), g_want):
        assert torch.allclose(g1, g2, atol=1e-12, rtol=0)
    ref_loss, dW, db, dx = sampled_softmax_grads(x.detach(), W.detach(), b.detach(), y, sv, estimator, with_dx=True)
    assert abs(float(ref_loss - want.detach())) < 1e-12  # the package's dense closed form too
    for g1, g2 in zip((dx, dW, db), g_want):
        assert torch.allclose(g1, g2, atol=1e-12, rtol=0)


@pytest.mark.parametrize("hard", list(HARD))
@pytest.mark.parametrize("estimator", ["importance", "logq"])
def test_merged_set_equals_unmerged_multiset(estimator, hard):
    pi, q, y, x, W, b, h = problem(2, hard)
    kw = dict(hard_negatives=h)
    merged = mixed_sampled_values(y, K, q, pi, generator=torch.Generator().manual_seed(3), **kw)
    multi = mixed_sampled_values(y, K, q, pi, generator=torch.Generator().manual_seed(3), merge=False, **kw)
    assert merged.sampled_candidates.shape[-1] < multi.sampled_candidates.shape[-1]  # duplicates were merged
    l1 = sampled_softmax_loss(x, W, b, y, None, estimator=estimator, sampled_values=merged, reduction="none")
    l2 = sampled_softmax_loss(x, W, b, y, None, estimator=estimator, sampled_values=multi, reduction="none")
    assert torch.allclose(l1, l2, atol=1e-12, rtol=0)
    for g1, g2 in zip(grads(l1.sum(), x, W, b), grads(l2.sum(), x, W, b)):
        assert torch.allclose(g1, g2, atol=1e-12, rtol=0)


def test_module_takes_the_mixed_set():
    pi, q, y, x, W, b, _ = problem(3)
    head = SampledSoftmaxLoss(C, D, K, sampler=q, estimator="logq").double()
    with torch.no_grad():
        head.weight.copy_(W)
        head.bias.copy_(b)
    sv = mixed_sampled_values(y, K, q, pi, generator=torch.Generator().manual_seed(4))
    want = sampled_softmax_loss(x, W, b, y, None, estimator="logq", sampled_values=sv)
    assert abs(float((head(x, y, sampled_values=sv) - want).detach())) < 1e-12


def test_nce_needs_the_unmerged_multiset():
    """NCE sums one softplus per copy: the multiset (merge=False) is its noise sample; merging changes it."""
    pi, q, y, x, W, b, h = problem(4, "shared")
    multi = mixed_sampled_values(y, K, q, pi, hard_negatives=h, merge=False,
                                 generator=torch.Generator().manual_seed(1))
    merged = mixed_sampled_values(y, K, q, pi, hard_negatives=h, generator=torch.Generator().manual_seed(1))
    got = nce_loss(x, W, b, y, None, sampled_values=multi, remove_accidental_hits=True, reduction="none")
    z = x @ W.T + b
    ids = multi.sampled_candidates
    o_t = z.gather(1, y[:, None])[:, 0] - multi.true_expected_count[:, 0].log()
    o_s = z[:, ids] - multi.sampled_expected_count.log()  # (B, M) one term per copy
    want = F.softplus(o_t) - o_t + torch.where(ids[None] == y[:, None], 0.0, F.softplus(o_s)).sum(1)
    assert torch.allclose(got, want, atol=1e-12, rtol=0)
    other = nce_loss(x, W, b, y, None, sampled_values=merged, remove_accidental_hits=True, reduction="none")
    assert not torch.allclose(other, want, atol=1e-6)


def _mc_normalizers(sv_of, n_batches, pi, q, E, W, g):
    """Rows' labels i.i.d. from pi, a row's logits W @ E[c]: (labels, D_hat) over n_batches batches of B."""
    ys, ds = [], []
    for _ in range(n_batches):
        y = torch.multinomial(pi, B, replacement=True, generator=g)
        x = E[y]
        sv = sv_of(y, g)
        loss = sampled_softmax_loss(x, W, None, y, None, estimator="importance", sampled_values=sv,
                                    reduction="none")
        ys.append(y)
        ds.append(torch.exp(loss + (x * W[y]).sum(1)))  # D = exp(loss + z_c)
    return torch.cat(ys), torch.cat(ds)


def test_importance_normalizer_of_the_mixture_is_unbiased():
    g = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    q = ProbsSampler(torch.softmax(0.7 * torch.randn(C, generator=g, dtype=torch.float64), 0))
    E = torch.randn(C, D, generator=g, dtype=torch.float64)  # (C, d) a row's features given its label
    W = 0.5 * torch.randn(C, D, generator=g, dtype=torch.float64)
    hard = torch.tensor([3, 3, 7])
    Z = torch.exp(E @ W.T).sum(1)  # (C,) the full normaliser of a row with label c

    def mixed(y, g):
        return mixed_sampled_values(y, K, q, pi, hard_negatives=hard, generator=g)

    def not_divided_by_n(y, g):  # merged candidates at Q_j instead of Q_j / n_j: the multiset undercounted
        sv = mixed(y, g)
        ids = sv.sampled_candidates
        Q = (B - 1) * pi[ids] + K * q.q[ids] + (ids[:, None] == hard).sum(1)
        return sv._replace(sampled_expected_count=Q)

    labels = torch.argsort(pi, descending=True)[:4]  # the four most frequent labels: enough rows each
    for sv_of, unbiased in ((mixed, True), (not_divided_by_n, False)):
        y, d = _mc_normalizers(sv_of, 3000, pi, q, E, W, g)
        z_scores = []
        for c in labels:
            dc = d[y == c] / Z[c]
            z_scores.append(float((dc.mean() - 1.0) / (dc.std() / math.sqrt(dc.numel()))))
        if unbiased:
            assert max(abs(s) for s in z_scores) < 4.0, z_scores
        else:
            assert min(z_scores) < -10.0, z_scores  # the test can fail: a wrong count is seen


@pytest.mark.parametrize("kw, match", [
    (dict(label_probs=torch.full((C + 1,), 1.0 / (C + 1), dtype=torch.float64)), "label_probs has 13 entries"),
    (dict(label_probs=torch.full((C, 1), 1.0 / C, dtype=torch.float64)), "label_probs must be a 1-D float"),
    (dict(label_probs=torch.tensor([-0.1, 1.1] + [0.0] * (C - 2), dtype=torch.float64)), "label_probs contain neg"),
    (dict(label_probs=torch.full((C,), math.nan, dtype=torch.float64)), "label_probs contain NaN"),
    (dict(label_probs=torch.full((C,), 0.5, dtype=torch.float64)), "label_probs sum to 6, not 1"),
    (dict(label_probs=torch.tensor([1.0] + [0.0] * (C - 1), dtype=torch.float64)), "label_probs is 0 for a label"),
    (dict(label_probs=None), "in_batch=True needs label_probs"),
    (dict(hard_negatives=torch.tensor([0, C])), r"hard_negatives must lie in \[0, 12\)"),
    (dict(hard_negatives=torch.tensor([[0, 1]])), r"hard_negatives must be integer ids of shape \(H,\) or \(6, H\)"),
    (dict(hard_negatives=torch.tensor([0.5])), "hard_negatives must be integer ids"),
    (dict(labels=torch.tensor([1])), "batch of >= 2 rows"),
    (dict(labels=torch.tensor([1, C])), r"labels must lie in \[0, 12\)"),
    (dict(labels=torch.zeros(B, 2, dtype=torch.long)), "one label per row"),
    (dict(num_sampled=-1), "num_sampled must be an integer >= 0"),
    (dict(sampler=None), "num_sampled=4 needs a softmaxlab Sampler"),
    (dict(num_sampled=0, sampler=None, in_batch=False), "no source of negatives"),
])
def test_bad_inputs_name_the_argument(kw, match):
    args = dict(labels=torch.tensor([1, 2, 3, 1, 5, 2]), num_sampled=K, sampler=ProbsSampler(torch.full((C,), 1 / C)),
                label_probs=torch.full((C,), 1.0 / C, dtype=torch.float64))
    args.update(kw)
    with pytest.raises(SoftmaxlabError, match=match):
        mixed_sampled_values(**args)


def test_bias_study_mixed_rows_leave_the_other_rows_alone_and_have_an_unbiased_normalizer():
    plain = bias_study(classes=10, samples=(8,), n_draws=200)
    rows = bias_study(classes=10, samples=(8,), n_draws=200, mixed=True)
    assert [r for r in rows if not r["estimator"].startswith("mixed")] == plain
    mi, ml = (next(r for r in rows if r["estimator"] == e) for e in ("mixed_importance", "mixed_logq"))
    assert abs(mi["d_rel_bias"]) < 4 * mi["d_rel_bias_se"]
    assert ml["d_rel_bias"] > 1.0  # logq's D is e^{z_c} + Q_c Z_{-c}, Q_c = 63 pi_c + 8 q_c >> 1 here


# ---- FrequencyEstimator ----------------------------------------------------------------------------------


def test_exact_counts_without_decay():
    g = torch.Generator().manual_seed(0)
    fe = FrequencyEstimator(C)
    assert torch.equal(fe.probs(), torch.full((C,), 1.0 / C, dtype=torch.float64))  # uniform before any update
    batches = [torch.randint(0, C, (17,), generator=g) for _ in range(9)]
    for y in batches:
        fe.update(y)
    n = torch.bincount(torch.cat(batches), minlength=C).double()
    assert torch.equal(fe.counts, n)
    assert torch.allclose(fe.probs(), (n + 1) / (n.sum() + C), atol=1e-15, rtol=0)
    assert float(fe.probs().min()) > 0


def test_decayed_estimate_follows_drift_within_its_stated_error():
    """The label distribution switches halfway. After n2 batches of the new one, the decayed estimate (window
    1 / (1 - decay) = 50 batches) matches the last window's exact frequency within the stated error: old
    weight decay^n2, the add-one term C / (total + C), and 4 standard deviations of both estimates' noise."""
    g = torch.Generator().manual_seed(1)
    decay, Bs, n1, n2 = 0.98, 64, 400, 400
    p1 = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    p2 = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    fe, exact, stream = FrequencyEstimator(C, decay), FrequencyEstimator(C), []
    for p in [p1] * n1 + [p2] * n2:
        y = torch.multinomial(p, Bs, replacement=True, generator=g)
        fe.update(y)
        exact.update(y)
        stream.append(y)
    W = round(1 / (1 - decay))
    recent = torch.bincount(torch.cat(stream[-W:]), minlength=C).double() / (W * Bs)
    total = Bs / (1 - decay)
    sd_ew = torch.sqrt(p2 * (1 - p2) * (1 - decay) / ((1 + decay) * Bs))  # exponentially weighted mean
    sd_win = torch.sqrt(p2 * (1 - p2) / (W * Bs))
    bound = decay**n2 + C / (total + C) + 4 * (sd_ew + sd_win)
    assert bool(((fe.probs() - recent).abs() <= bound).all()), (fe.probs() - recent).abs() / bound
    assert bool(((exact.probs() - recent).abs() > bound).any())  # undecayed counts lag behind: the test can fail


def test_state_dict_round_trip_continues_bit_identically(tmp_path):
    g = torch.Generator().manual_seed(2)
    batches = [torch.randint(0, C, (8,), generator=g) for _ in range(20)]
    a = FrequencyEstimator(C, decay=0.9)
    for y in batches[:10]:
        a.update(y)
    torch.save(a.state_dict(), tmp_path / "fe.pt")
    b = FrequencyEstimator(C, decay=0.9)
    b.load_state_dict(torch.load(tmp_path / "fe.pt"))
    for y in batches[10:]:
        a.update(y)
        b.update(y)
    assert torch.equal(a.probs(), b.probs()) and a.updates == b.updates == 20
    with pytest.raises(SoftmaxlabError, match="state is for num_classes=12, decay=0.9"):
        FrequencyEstimator(C).load_state_dict(a.state_dict())


@pytest.mark.parametrize("kw, match", [(dict(decay=1.0), "decay must be None"), (dict(decay=0.0), "decay must be"),
                                       (dict(num_classes=1), "num_classes must be an integer >= 2")])
def test_frequency_estimator_bad_settings(kw, match):
    with pytest.raises(SoftmaxlabError, match=match):
        FrequencyEstimator(**{"num_classes": C, **kw})


def test_frequency_estimator_bad_labels():
    with pytest.raises(SoftmaxlabError, match=r"labels must lie in \[0, 12\)"):
        FrequencyEstimator(C).update(torch.tensor([0, C]))
