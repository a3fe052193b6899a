import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist.models import (
    BUDGET,
    build,
    glorot_,
    linear,
    mlp,
    mlp_param_count,
    param_count,
    width_for_budget,
    width_root,
    width_table,
)


def test_q2_budget_is_the_784_1024_10_mlp():
    assert param_count(mlp(1, 1024)) == BUDGET == 814_090


def test_widths_for_l_1_to_8_match_the_issue():
    assert [width_for_budget(L) for L in range(1, 9)] == [1024, 588, 469, 405, 362, 331, 308, 289]


@pytest.mark.parametrize("L,k", [(1, 1), (1, 1024), (2, 588), (3, 7), (8, 289)])
def test_param_count_formula_matches_numel(L, k):
    assert mlp_param_count(L, k) == param_count(mlp(L, k)) == (L - 1) * k * k + (L + 794) * k + 10


def test_linear_has_7850_params():
    assert param_count(linear()) == 784 * 10 + 10


@settings(max_examples=300, deadline=None)
@given(L=st.integers(1, 64), budget=st.integers(1_000, 50_000_000))
def test_chosen_width_is_optimal_among_neighbours(L, budget):
    if budget < mlp_param_count(L, 1):
        with pytest.raises(SoftmaxlabError):
            width_for_budget(L, budget)
        return
    k = width_for_budget(L, budget)
    err = lambda w: abs(mlp_param_count(L, w) - budget)
    assert k >= 1
    assert err(k) <= err(k + 1)
    if k > 1:
        assert err(k) <= err(k - 1)
    lo, hi = width_for_budget(L, budget, "floor"), width_for_budget(L, budget, "ceil")
    assert mlp_param_count(L, lo) <= budget < mlp_param_count(L, lo + 1)
    assert mlp_param_count(L, hi) >= budget and (hi == 1 or mlp_param_count(L, hi - 1) < budget)
    assert lo <= width_root(L, budget) <= hi


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_layers_is_a_clear_error(bad):
    with pytest.raises(SoftmaxlabError, match="layers"):
        width_for_budget(bad)


def test_budget_too_small_is_a_clear_error():
    with pytest.raises(SoftmaxlabError, match="too small"):
        width_for_budget(8, 800)


def test_bad_rounding_and_width():
    with pytest.raises(SoftmaxlabError, match="rounding"):
        width_for_budget(2, rounding="up")
    with pytest.raises(SoftmaxlabError, match="width"):
        mlp(2, 0)
    with pytest.raises(SoftmaxlabError, match="model"):
        build("cnn")
    with pytest.raises(SoftmaxlabError, match="init"):
        build("mlp", init="he")


def test_glorot_zeroes_biases_and_bounds_weights():
    net = glorot_(mlp(2, 100))
    for m in net:
        if hasattr(m, "weight"):
            fan_out, fan_in = m.weight.shape
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.9 * bound
            assert (m.bias == 0).all()


def test_width_table_rows():
    rows = width_table(range(1, 9))
    assert [r["width"] for r in rows] == [1024, 588, 469, 405, 362, 331, 308, 289]
    assert all(abs(r["deviation"]) < 0.003 * BUDGET for r in rows)
    assert rows[0]["deviation"] == 0 and rows[0]["root"] == 1024
