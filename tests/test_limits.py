"""The numbers docs/derivations.md quotes for logq's and the as-posed estimator's large-K limits, and for the
importance estimator with TensorFlow's unique algorithm, computed from their closed forms on the bias study's
own problem (softmaxlab sampled bias: 64 examples, logits 1.5 N(0, 1), labels from softmax(z), seed 0,
uniform proposal), and checked against the study's Monte Carlo where it measures the same thing."""

import math

import pytest
import torch

from softmaxlab.bias import bias_study
from softmaxlab.samplers import LogUniformSampler

ROWS = torch.arange(64)


def study_problem(C: int):
    """bias_study's default logits and labels (seed 0)."""
    g = torch.Generator().manual_seed(0)
    z = 1.5 * torch.randn(64, C, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return torch.softmax(z, 1), y


def logq_limit(Qc: float, C: int = 10):
    """K -> infinity with Q_c fixed: the importance sum tends to Z_{-c}, so D -> e^{z_c} / Q_c + Z_{-c} and
    g_j / p_j = 1 / (1 - p_c + p_c / Q_c) for j != c, g_c = (p_c / Q_c) / (1 - p_c + p_c / Q_c) - 1.
    Returns (mean relative gradient error, mean value offset E log(p_c + Q_c (1 - p_c)))."""
    p, y = study_problem(C)
    pc = p[ROWS, y]
    inv = 0.0 if math.isinf(Qc) else 1.0 / Qc
    r = 1.0 / (1.0 - pc + pc * inv)
    g_full, g_lim = p.clone(), p * r[:, None]
    g_full[ROWS, y] -= 1.0
    g_lim[ROWS, y] = pc * inv * r - 1.0
    err = float(((g_lim - g_full).norm(dim=1) / g_full.norm(dim=1)).mean())
    offset = None if math.isinf(Qc) else float(torch.log(pc + Qc * (1.0 - pc)).mean())
    return err, offset


@pytest.mark.parametrize("Qc,err", [(0.8, 0.06), (6.4, 0.42), (51.2, 0.60), (math.inf, 0.64)])
def test_logq_gradient_error_does_not_vanish_with_k_at_fixed_c(Qc, err):
    """With replacement Q_c = K q_c grows with K (C = 10, q_c = 0.1): the error tends to a limit that grows with
    Q_c, because the condition for accuracy is p_c |1/Q_c - 1| << 1, not a large K."""
    assert logq_limit(Qc)[0] == pytest.approx(err, abs=0.005)


def test_logq_value_offset_is_log_of_pc_plus_qc_times_one_minus_pc():
    """At Q_c = 51.2 (K = 512): 3.560 predicted; the study's Monte Carlo measures 3.5585."""
    predicted = logq_limit(51.2)[1]
    assert predicted == pytest.approx(3.560, abs=0.0005)
    assert math.log(51.2) - predicted > 0.3  # the old "about log Q_c" was off by E log(1 - p_c)
    row = [r for r in bias_study(classes=10, samples=(512,)) if r["estimator"] == "logq"][0]
    assert row["loss_bias"] == pytest.approx(predicted, abs=0.01)


def test_as_posed_gradient_is_21x_too_small_at_c10_and_far_more_at_c1e5():
    """K -> infinity: D -> e^{z_c} + sum_{j != c} q_j q'_j e^{z_j}; for the uniform q each negative's gradient is
    p_j / (1 + (C (C - 1) - 1) p_c): a median 21x too small at C = 10, 2.5e3 to 1.1e7 times at C = 1e5."""
    ratios = {}
    for C in (10, 10**5):
        p, y = study_problem(C)
        pc = p[ROWS, y]
        ratios[C] = C * (C - 1) * pc + 1.0 - pc
    assert float(ratios[10].median()) == pytest.approx(21.2, abs=0.1)
    assert 2e3 < float(ratios[10**5].min()) and float(ratios[10**5].max()) < 2e7
    assert float(ratios[10**5].median()) == pytest.approx(4.07e5, rel=0.01)


@pytest.mark.parametrize("convention,want", [("inclusion", 1.10), ("tf", 1.08)])
def test_importance_with_tfs_unique_draws_is_only_approximately_unbiased(convention, want):
    """E[Z_hat] / Z for z = 0 (Z = C), log-uniform q, C = 10, K = 6 distinct ids by TF's algorithm, Q from
    1 - (1 - q)^T (or TF's K q when T = K): not 1, since Q is an approximation of the inclusion probability."""
    C, K, n = 10, 6, 4000
    s, g = LogUniformSampler(C), torch.Generator().manual_seed(0)
    vals = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        d = s.sample(K, generator=g, unique=True)
        vals[i] = (1.0 / s.expected_count(d.ids, K, unique=True, num_tries=d.num_tries, convention=convention)).sum()
    ratio, se = float(vals.mean()) / C, float(vals.std()) / C / math.sqrt(n)
    assert ratio == pytest.approx(want, abs=3 * se + 0.005) and ratio - 1 > 10 * se
