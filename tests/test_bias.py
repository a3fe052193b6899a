"""Bias study: as posed is far off, importance sampling converges, logq's value carries a log Q_c offset."""

import math

import pytest
import torch
import torch.nn.functional as F

from softmaxlab.bias import bias_study, format_table
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist.summary import BiasStudy
from softmaxlab.report.figures import plot_bias


def by(rows, est):
    return sorted((r for r in rows if r["estimator"] == est), key=lambda r: r["num_sampled"])


@pytest.fixture(scope="module")
def rows10():
    return bias_study(classes=10, samples=(8, 64, 512), n_draws=400, seed=0)


def test_as_posed_is_far_off(rows10):
    for r in by(rows10, "as_posed"):
        assert r["loss_bias"] < -1.0 and abs(r["loss_bias"]) > 50 * r["loss_bias_se"]
        assert r["d_rel_bias"] < -0.5  # E[D] is far below Z for every K: the bias does not shrink
        assert r["grad_rel_err"] > 0.5


def test_importance_converges_and_its_normalizer_is_unbiased(rows10):
    imp = by(rows10, "importance")
    biases = [abs(r["loss_bias"]) for r in imp]
    assert biases[0] > biases[1] > biases[2] and biases[2] < 0.01
    assert imp[0]["loss_bias"] < 0  # Jensen: E[log D] < log E[D] = log Z
    for r in imp:
        assert abs(r["d_rel_bias"]) < 4 * r["d_rel_bias_se"] + 1e-3  # E[D] = Z
    errs = [r["grad_rel_err"] for r in imp]
    assert errs[0] > errs[1] > errs[2]


def test_logq_value_carries_the_log_expected_count_offset(rows10):
    """With replacement Q_c = K q_c: D_hat = e^{z_c} + Q_c Z_hat_{-c}, so the bias grows like log(K / C)."""
    lq = by(rows10, "logq")
    assert lq[0]["loss_bias"] < lq[1]["loss_bias"] < lq[2]["loss_bias"]
    assert lq[2]["loss_bias"] > 2.0  # K = 512 >> C = 10: Q_c = 51
    # when Q_c Z_{-c} dominates, loss_hat ~ log Q_c + log Z_{-c} - z_c: offset ~ log(512 / 10)
    assert abs(lq[2]["loss_bias"] - math.log(51.2)) < 1.0


def test_logq_gradient_converges_when_q_c_is_small():
    rows = bias_study(classes=3000, samples=(4, 256), n_draws=100, seed=1, n_examples=16)
    lq = by(rows, "logq")
    assert lq[1]["grad_rel_err"] < lq[0]["grad_rel_err"]
    assert lq[0]["loss_bias"] < -5  # log(4 / 3000) = -6.6: the value is far off, the gradient less so


def test_given_logits_and_exact_loss():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 10, generator=g) * 3
    y = z.argmax(1)
    rows = bias_study(logits=(z, y), samples=(16,), n_draws=50)
    assert len(rows) == 3 and all(r["classes"] == 10 and r["n_examples"] == 40 for r in rows)
    exact = float(F.cross_entropy(z.double(), y))
    assert all(abs(r["exact_loss"] - exact) < 1e-12 for r in rows)
    assert all(math.isfinite(v) for r in rows for v in r.values() if isinstance(v, float))


@pytest.mark.parametrize("sampler", ["loguniform", "unigram"])
def test_other_samplers_run(sampler):
    rows = bias_study(classes=50, samples=(8,), sampler=sampler, n_draws=50)
    imp, ap = by(rows, "importance")[0], by(rows, "as_posed")[0]
    assert abs(imp["loss_bias"]) < abs(ap["loss_bias"])


def test_deterministic_and_adaptive_draws():
    a = bias_study(classes=20, samples=(8, 4096), n_draws=100, seed=5, n_examples=8, max_elements=1 << 16)
    b = bias_study(classes=20, samples=(8, 4096), n_draws=100, seed=5, n_examples=8, max_elements=1 << 16)
    assert a == b
    assert {r["num_sampled"]: r["n_draws"] for r in a} == {8: 100, 4096: 2}


@pytest.mark.slow
def test_hundred_thousand_classes_default_settings():
    rows = bias_study(classes=100_000)
    imp, ap = by(rows, "importance"), by(rows, "as_posed")
    assert abs(imp[-1]["loss_bias"]) < 0.05 < abs(imp[0]["loss_bias"])
    assert all(r["loss_bias"] < -5 for r in ap)


def test_plot_and_table(tmp_path, rows10):
    """`sampled bias --plot` draws the report's bias figure (one panel), PNG or SVG by the suffix."""
    study = BiasStudy("random logits", 10, "uniform", tuple(rows10))
    plot_bias(study, tmp_path / "bias.png")
    plot_bias(study, tmp_path / "bias.svg")
    assert (tmp_path / "bias.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "bias.svg").read_bytes()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bias.png", "bias.svg"]  # no temp files left
    table = format_table(rows10)
    assert table.count("\n") == 2 + len(rows10) - 1 and "importance" in table
    with pytest.raises(SoftmaxlabError, match="png"):
        plot_bias(study, tmp_path / "bias.pdf")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(classes=1), "classes"),
        (dict(samples=(0, 8)), "samples"),
        (dict(samples=()), "samples"),
        (dict(n_draws=1), "n_draws"),
        (dict(sampler="zipf"), "unknown sampler"),
        (dict(logits=torch.zeros(5, 3)), "pair"),
        (dict(logits=(torch.zeros(5, 3), torch.tensor([0, 1, 2, 3, 0]))), "labels"),
        (dict(logits=(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))), "logits must be"),
        (dict(logits=(torch.full((2, 3), float("nan")), torch.zeros(2, dtype=torch.long))), "NaN"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    with pytest.raises(SoftmaxlabError, match=match):
        bias_study(**kwargs)
