"""Named gradient checks behind `softmaxlab sampled check`.

Three independent ways to get each gradient, compared pairwise on small float64 problems:
  closed form   the formulas of docs/derivations.md (softmax_xent_grads, sampled_softmax_grads);
  autograd      torch.autograd through the same loss written as a plain torch expression;
  Function      the hand-written backward of SoftmaxXent / SampledSoftmaxXent (the fast path);
plus a 5-point central finite difference of the Function's loss (error O(h^4), h = 1e-3, so about 1e-12 in
float64) together with torch.autograd.gradcheck. Every sampled setup has repeated sampled ids (K > C) and,
for shared and in-batch draws, accidental hits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled import (
    ESTIMATORS,
    draw_sampled_values,
    nce_grads,
    nce_loss,
    reference_weights,
    sampled_softmax_grads,
    sampled_softmax_loss,
)
from softmaxlab.samplers import ProbsSampler
from softmaxlab.softmax import SoftmaxXent, softmax_xent_grads

MODES = ("shared", "per_row", "num_true2", "unique", "in_batch")
_TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def _max_err(a, b) -> float:
    return max(float((u.double() - v.double()).abs().max()) for u, v in zip(a, b) if u is not None)


def _fd_grads(f, tensors, h: float = 1e-3) -> list[torch.Tensor]:
    """5-point central differences of the scalar f() with respect to every entry of `tensors` (in place)."""
    out = []
    with torch.no_grad():
        for t in tensors:
            flat, g = t.view(-1), torch.zeros(t.numel(), dtype=t.dtype)
            for i in range(flat.numel()):
                orig = float(flat[i])
                vals = []
                for step in (2, 1, -1, -2):
                    flat[i] = orig + step * h
                    vals.append(float(f()))
                flat[i] = orig
                g[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
            out.append(g.view_as(t))
    return out


def _grads(loss_fn, tensors):
    ts = [t.detach().clone().requires_grad_() for t in tensors]
    loss = loss_fn(*ts)
    loss.backward()
    return [loss.detach()] + [t.grad for t in ts]


def _row(name: str, err: float, tol: float, extra_ok: bool = True) -> dict:
    return dict(name=name, max_abs_err=err, tol=tol, ok=bool(err <= tol and extra_ok))


def _fd_row(name: str, loss_fn, tensors, func, tol: float) -> dict:
    """Finite differences of loss_fn and torch.autograd.gradcheck, against the Function's gradients func[1:]."""
    ts = [t.clone() for t in tensors]
    num = _fd_grads(lambda: loss_fn(*ts), ts)
    ok = torch.autograd.gradcheck(loss_fn, tuple(t.clone().requires_grad_() for t in tensors),
                                  raise_exception=False, fast_mode=True)
    return _row(f"{name}.finite_difference+gradcheck", _max_err(num, func[1:]), tol, ok)


def _three_way(name: str, closed, autograd_loss, function_loss, tensors, tol: float, fd: bool) -> list[dict]:
    """closed form (loss, dx, dW, db) vs autograd, the Function vs the closed form, and finite differences."""
    auto = _grads(autograd_loss, tensors)
    func = _grads(function_loss, tensors)
    rows = [_row(f"{name}.closed_form_vs_autograd", _max_err(closed, auto), tol),
            _row(f"{name}.function_vs_closed_form", _max_err(func, closed), tol)]
    return rows + [_fd_row(name, function_loss, tensors, func, tol)] if fd else rows


def _softmax_checks(dtype, seed, tol, fd: bool) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    B, d, C = 5, 3, 7
    x, W, b = (torch.randn(*s, generator=g, dtype=torch.float64).to(dtype) for s in ((B, d), (C, d), (C,)))
    y = torch.randint(0, C, (B,), generator=g)

    def autograd_loss(x_, W_, b_):
        z = x_ @ W_.T + b_
        return (torch.logsumexp(z, 1) - z.gather(1, y[:, None]).squeeze(1)).mean()

    def function_loss(*t):
        return SoftmaxXent.apply(*t, y)

    closed = softmax_xent_grads(x, W, b, y)
    auto = _grads(autograd_loss, (x, W, b))
    func = _grads(function_loss, (x, W, b))
    rows = [
        _row("softmax.closed_form_vs_autograd", _max_err(closed, [auto[0], auto[2], auto[3]]), tol),
        _row("softmax.SoftmaxXent_vs_autograd", _max_err(func, auto), tol),
    ]
    return rows + [_fd_row("softmax", function_loss, (x, W, b), func, tol)] if fd else rows


def _sampled_setup(mode: str, seed: int, dtype):
    """A small problem with repeated samples (K > C) and accidental hits, and its fixed samples."""
    g = torch.Generator().manual_seed(seed)
    B, d, C, K = 5, 3, 7, 10
    x, W, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((B, d), (C, d), (C,)))
    q = torch.softmax(torch.randn(C, generator=g, dtype=torch.float64), 0)
    sampler = ProbsSampler(q)
    T = 2 if mode == "num_true2" else 1
    y = torch.randint(0, C, (B, T), generator=g)
    unique = mode == "unique"
    k = C - 2 if unique else K
    if mode in ("shared", "num_true2", "unique"):
        ids = sampler.sample(k, generator=torch.Generator().manual_seed(seed + 1), unique=unique).ids
        y[0, 0], y[1, 0] = ids[0], ids[1]  # accidental hits
        if T == 2:
            y[2, 1] = y[2, 0]  # a label repeated within its row
    if mode == "in_batch":
        y[3, 0] = y[0, 0]  # two rows with the same label: hits in each other's columns
    sv = draw_sampled_values(y, None if mode == "in_batch" else k, sampler, shared=mode != "per_row",
                             unique=unique, generator=torch.Generator().manual_seed(seed + 1),
                             in_batch=mode == "in_batch")
    return x.to(dtype), W.to(dtype), b.to(dtype), y, sv, sampler


def _sampled_checks(estimator: str, mode: str, dtype, seed: int, tol: float, fd: bool) -> list[dict]:
    x, W, b, y, sv, sampler = _sampled_setup(mode, seed, dtype)
    in_batch = mode == "in_batch"
    T = y.shape[1]

    def function_loss(x_, W_, b_):
        if in_batch:
            return sampled_softmax_loss(x_, W_, b_, y, None, sampler=sampler, estimator=estimator, in_batch=True)
        return sampled_softmax_loss(x_, W_, b_, y, None, estimator=estimator, sampled_values=sv, num_true=T)

    def autograd_loss(x_, W_, b_):
        A, Y, shift = reference_weights(estimator, y, sv, W.shape[0], True, in_batch, x.dtype)
        z = x_ @ W_.T + b_
        return (torch.logsumexp(z + torch.log(A), 1) - (Y * z).sum(1) - shift).mean()

    closed = sampled_softmax_grads(x, W, b, y, sv, estimator, in_batch=in_batch, with_dx=True)
    closed = [closed[0], closed[3], closed[1], closed[2]]  # (loss, dx, dW, db)
    return _three_way(f"sampled.{estimator}.{mode}", closed, autograd_loss, function_loss, (x, W, b), tol, fd)


def _nce_checks(dtype, seed: int, tol: float, fd: bool) -> list[dict]:
    """nce_loss on the shared setup (repeated ids, hits), hits masked by TF's rule and num_true 2."""
    x, W, b, y, sv, _ = _sampled_setup("num_true2", seed, dtype)

    def function_loss(x_, W_, b_):
        return nce_loss(x_, W_, b_, y, None, sampled_values=sv, num_true=2, remove_accidental_hits="tf",
                        reduction="sum")

    def autograd_loss(x_, W_, b_):  # tf.nn.nce_loss written out: sigmoid cross-entropy on z - log Q
        z = x_ @ W_.T + b_
        o_t = z.gather(1, y) - torch.log(sv.true_expected_count)
        o_s = z[:, sv.sampled_candidates] - torch.log(sv.sampled_expected_count)
        is_true = (sv.sampled_candidates[None, :, None] == y[:, None, :]).any(2)  # (B, K)
        later = (sv.sampled_candidates[:, None] == sv.sampled_candidates[None, :]).triu(1).any(1)  # (K,)
        keep = ~(is_true & ~later)
        return ((F.softplus(o_t) - o_t / 2).sum() + (keep * F.softplus(o_s)).sum())

    loss, dW, db, dx = nce_grads(x, W, b, y, sv, remove_accidental_hits="tf")
    return _three_way("nce", [loss.sum(), dx, dW, db], autograd_loss, function_loss, (x, W, b), tol, fd)


def run_checks(dtype: torch.dtype = torch.float64, seed: int = 0) -> list[dict]:
    """All named checks: [{name, max_abs_err, tol, ok}]. Finite differences run in float64 only."""
    if dtype not in _TOL:
        raise SoftmaxlabError(f"checks run in float64 or float32, got {dtype}; pass torch.float64")
    tol, fd = _TOL[dtype], dtype == torch.float64
    rows = _softmax_checks(dtype, seed, tol, fd)
    for estimator in ESTIMATORS:
        for mode in MODES:
            rows += _sampled_checks(estimator, mode, dtype, seed, tol, fd)
    return rows + _nce_checks(dtype, seed, tol, fd)
