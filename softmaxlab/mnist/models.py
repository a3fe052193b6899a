"""Q1/Q2 models and the parameter maths of Q3: which width keeps L hidden layers at a fixed budget."""

from __future__ import annotations

import math

from torch import nn

from ..errors import SoftmaxlabError

D_IN = 784  # 28 x 28 pixels, flattened
N_OUT = 10  # digit classes
BUDGET = 814_090  # parameters of the assignment's 784-1024-10 MLP (Q2)


def linear(d_in: int = D_IN, n_out: int = N_OUT) -> nn.Sequential:
    """Q1: a softmax classifier z = W x + b (the softmax lives in the cross-entropy loss)."""
    return nn.Sequential(nn.Linear(d_in, n_out))


def mlp(layers: int, width: int, d_in: int = D_IN, n_out: int = N_OUT) -> nn.Sequential:
    """`layers` ReLU hidden layers of `width` units each, then a linear layer to logits."""
    _check_layers(layers)
    if not isinstance(width, int) or width < 1:
        raise SoftmaxlabError(f"width must be a positive integer, got {width!r}: pass --width 1 or more, or auto")
    dims = [d_in] + [width] * layers  # each hidden layer's fan-in, then the output layer's
    hidden = [m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*hidden, nn.Linear(dims[-1], n_out))


def glorot_(model: nn.Module) -> nn.Module:
    """Keras's default initialisation (Glorot-uniform weights, zero biases), to match the assignment's runs."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def mlp_param_count(layers: int, width: int, d_in: int = D_IN, n_out: int = N_OUT) -> int:
    """(L-1) k^2 + (L + d_in + n_out) k + n_out: first layer d_in*k + k, L-1 hidden k*k + k, output k*n_out + n_out.

    For the default sizes this is (L-1)k^2 + (L+794)k + 10.
    """
    _check_layers(layers)
    return (layers - 1) * width * width + (layers + d_in + n_out) * width + n_out


def width_root(layers: int, budget: int = BUDGET, d_in: int = D_IN, n_out: int = N_OUT) -> float:
    """The positive real root k of mlp_param_count(L, k) = budget."""
    _check_layers(layers)
    a, b, c = layers - 1, layers + d_in + n_out, n_out - budget
    if a == 0:
        return -c / b
    # Citardauq form: stable for large b where -b + sqrt(b^2 - 4ac) cancels.
    return 2 * -c / (b + math.sqrt(b * b - 4 * a * c))


def negative_root(layers: int, budget: int = BUDGET, d_in: int = D_IN, n_out: int = N_OUT) -> float:
    """The other root of mlp_param_count(L, k) = budget (L >= 2): negative, so no width at all."""
    a, b = layers - 1, layers + d_in + n_out
    if a == 0:
        raise SoftmaxlabError("one hidden layer's count is linear in k: it has no second root")
    return -b / a - width_root(layers, budget, d_in, n_out)  # the two roots sum to -b/a


def width_for_budget(
    layers: int, budget: int = BUDGET, rounding: str = "nearest", d_in: int = D_IN, n_out: int = N_OUT
) -> int:
    """Integer width of L equal hidden layers whose parameter count meets `budget`.

    "nearest": the width whose count is closest to the budget (ties go to the smaller width);
    "floor": the largest width at or under the budget; "ceil": the smallest width at or over it.
    """
    _check_layers(layers)
    if rounding not in ("nearest", "floor", "ceil"):
        raise SoftmaxlabError(f"unknown rounding {rounding!r}: use nearest, floor or ceil")
    smallest = mlp_param_count(layers, 1, d_in, n_out)
    if not isinstance(budget, int) or budget < smallest:
        raise SoftmaxlabError(
            f"budget {budget!r} is too small for {layers} hidden layer(s) of width >= 1: "
            f"use a budget of at least {smallest}"
        )
    count = lambda k: mlp_param_count(layers, k, d_in, n_out)
    # Float rounding can put floor(root) one off; fix it against the exact integer count.
    lo = max(1, math.floor(width_root(layers, budget, d_in, n_out)))
    while lo > 1 and count(lo) > budget:
        lo -= 1
    while count(lo + 1) <= budget:
        lo += 1
    hi = lo if count(lo) == budget else lo + 1  # count(lo) <= budget <= count(hi)
    if rounding != "nearest":
        return lo if rounding == "floor" else hi
    return lo if budget - count(lo) <= count(hi) - budget else hi


def build(model: str, layers: int = 1, width: int | None = None, init: str = "torch",
          budget: int = BUDGET) -> tuple[nn.Sequential, int]:
    """The model a config names, and its hidden width (0 for linear). width=None: equal-parameter width."""
    if model == "linear":
        net, width = linear(), 0
    elif model == "mlp":
        width = width_for_budget(layers, budget) if width is None else width
        net = mlp(layers, width)
    else:
        raise SoftmaxlabError(f"unknown model {model!r}: use linear or mlp")
    if init == "glorot":
        glorot_(net)
    elif init != "torch":
        raise SoftmaxlabError(f"unknown init {init!r}: use torch or glorot")
    return net, width


def width_table(layers: range | list[int] = range(1, 9), budget: int = BUDGET) -> list[dict]:
    """Q3: for each L, the exact root, the chosen width, its parameter count and the deviation from budget."""
    rows = []
    for L in layers:
        k = width_for_budget(L, budget)
        p = mlp_param_count(L, k)
        rows.append(dict(layers=L, root=width_root(L, budget), width=k, params=p,
                         deviation=p - budget, deviation_pct=100.0 * (p - budget) / budget))
    return rows


def _check_layers(layers: int) -> None:
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise SoftmaxlabError(f"layers must be an integer >= 1, got {layers!r}: pass --layers 1 or more")
