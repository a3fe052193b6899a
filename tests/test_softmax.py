"""Full softmax: closed-form gradients and SoftmaxXent's backward against torch.autograd (float64)."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.softmax import SoftmaxXent, softmax_xent_grads

f64 = torch.float64


def _problem(B, d, C, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g, dtype=f64)
    W = torch.randn(C, d, generator=g, dtype=f64) * scale
    b = torch.randn(C, generator=g, dtype=f64)
    y = torch.randint(0, C, (B,), generator=g)
    return x, W, b, y


def _autograd(x, W, b, y):
    x, W, b = (t.clone().requires_grad_() for t in (x, W, b))
    loss = F.cross_entropy(x @ W.T + b, y)
    loss.backward()
    return loss.detach(), x.grad, W.grad, b.grad


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 6), d=st.integers(1, 5), C=st.integers(2, 9), seed=st.integers(0, 2**31 - 1))
def test_closed_form_matches_autograd(B, d, C, seed):
    x, W, b, y = _problem(B, d, C, seed)
    loss, dW, db = softmax_xent_grads(x, W, b, y)
    ref_loss, _, ref_dW, ref_db = _autograd(x, W, b, y)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(dW, ref_dW, rtol=0, atol=1e-12)
    torch.testing.assert_close(db, ref_db, rtol=0, atol=1e-12)


def test_per_logit_formula_by_hand():
    """dl/dz_i = p_i - 1[i = c] for one example, and dl/dw_i = that times x (the assignment's form is wrong)."""
    x, W, b, y = _problem(1, 4, 5, seed=3)
    z = (x @ W.T + b)[0]
    p = torch.softmax(z, 0)
    c = int(y[0])
    dz = p.clone()
    dz[c] -= 1
    _, dW, db = softmax_xent_grads(x, W, b, y)
    torch.testing.assert_close(db, dz, rtol=0, atol=1e-14)
    torch.testing.assert_close(dW, dz[:, None] * x[0][None, :], rtol=0, atol=1e-14)
    wrong = -torch.log(p)[:, None] * x[0][None, :] * (p * (1 - p))[:, None]  # the assignment's answer
    assert (wrong - dW).abs().max() > 1e-2


def test_softmaxxent_backward_matches_autograd():
    x, W, b, y = _problem(7, 5, 11, seed=1)
    xs, Ws, bs = (t.clone().requires_grad_() for t in (x, W, b))
    loss = SoftmaxXent.apply(xs, Ws, bs, y)
    (loss * 2.5).backward()  # a non-unit upstream gradient
    ref_loss, rdx, rdW, rdb = _autograd(x, W, b, y)
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(xs.grad, 2.5 * rdx, rtol=0, atol=1e-12)
    torch.testing.assert_close(Ws.grad, 2.5 * rdW, rtol=0, atol=1e-12)
    torch.testing.assert_close(bs.grad, 2.5 * rdb, rtol=0, atol=1e-12)


def test_softmaxxent_gradcheck():
    x, W, b, y = _problem(3, 4, 5, seed=2)
    ins = tuple(t.clone().requires_grad_() for t in (x, W, b))
    assert torch.autograd.gradcheck(lambda a, c, e: SoftmaxXent.apply(a, c, e, y), ins)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_extreme_logits_stay_finite(dtype):
    # logits of +/-1e4: a naive exp() overflows, the log-sum-exp form does not.
    x = torch.tensor([[1.0], [1.0]], dtype=dtype)
    W = torch.tensor([[1e4], [-1e4], [0.0]], dtype=dtype)
    b = torch.zeros(3, dtype=dtype)
    y = torch.tensor([1, 0])
    loss, dW, db = softmax_xent_grads(x, W, b, y)
    assert torch.isfinite(loss) and torch.isfinite(dW).all() and torch.isfinite(db).all()
    assert abs(float(loss) - 1e4) < 1e2  # (2e4 + 0) / 2
    Ws = W.clone().requires_grad_()
    SoftmaxXent.apply(x, Ws, b, y).backward()
    assert torch.isfinite(Ws.grad).all()


def test_bad_inputs_raise():
    x, W, b, y = _problem(3, 4, 5, seed=0)
    with pytest.raises(SoftmaxlabError, match="labels must lie"):
        softmax_xent_grads(x, W, b, torch.tensor([0, 5, 1]))
    with pytest.raises(SoftmaxlabError, match="W must be"):
        softmax_xent_grads(x, W[:, :3], b, y)
    with pytest.raises(SoftmaxlabError, match="b must"):
        softmax_xent_grads(x, W, b[:4], y)
    with pytest.raises(SoftmaxlabError, match="y must"):
        softmax_xent_grads(x, W, b, y[:2])
    with pytest.raises(SoftmaxlabError, match="integer"):
        softmax_xent_grads(x, W, b, y.double())
    with pytest.raises(SoftmaxlabError, match="2-D"):
        softmax_xent_grads(x[0], W, b, y)
