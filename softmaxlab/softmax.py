"""Full softmax cross-entropy with a hand-written backward (Problem 1, first part).

Logits z_i = w_i . x + b_i, p = softmax(z), loss l = -log p_c. The chain rule gives
    dl/dz_i = p_i - 1[i = c],  dl/dw_i = (p_i - 1[i = c]) x,  dl/db_i = p_i - 1[i = c],
and dl/dx = sum_i (p_i - 1[i = c]) w_i. Derivation: docs/derivations.md, section 1.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from softmaxlab.errors import SoftmaxlabError


def _check(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor) -> None:
    if x.dim() != 2:
        raise SoftmaxlabError(f"x must be 2-D (B, d), got shape {tuple(x.shape)}; flatten the input first")
    if W.dim() != 2 or W.shape[1] != x.shape[1]:
        raise SoftmaxlabError(
            f"W must be (C, d) with d = {x.shape[1]}, got shape {tuple(W.shape)}; pass a (classes, features) matrix"
        )
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise SoftmaxlabError(f"b must have shape ({W.shape[0]},), got {tuple(b.shape)}; pass one bias per class")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise SoftmaxlabError(f"y must be (B,) = ({x.shape[0]},), got {tuple(y.shape)}; pass one label per row")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise SoftmaxlabError(f"y must hold integer class ids, got {y.dtype}; pass a LongTensor")
    if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= W.shape[0]):
        raise SoftmaxlabError(
            f"labels must lie in [0, {W.shape[0]}), got [{int(y.min())}, {int(y.max())}]; fix the labels"
        )


def _probs_and_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p = softmax(z) and per-example -log p_c, both from one log-sum-exp (finite for |z| ~ 1e4)."""
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    lse = torch.logsumexp(z, dim=1)  # (B,)
    loss = lse - z.gather(1, y.long()[:, None]).squeeze(1)  # (B,)
    p = torch.exp(z - lse[:, None])  # (B, C)
    return p, loss


def softmax_xent_grads(
    x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form batch-mean loss and its gradients: (loss, dW (C, d), db (C,)).

    G = (p - onehot(y)) / B is dl/dz for the batch mean; dW = G^T x and db = sum_b G_b.
    """
    _check(x, W, b, y)
    B = x.shape[0]
    p, loss = _probs_and_loss(x @ W.T + b, y)
    G = p.clone()  # (B, C)
    G[torch.arange(B, device=x.device), y.long()] -= 1.0
    G /= B
    G = G.to(x.dtype)
    return loss.mean(), G.T @ x, G.sum(0)


class SoftmaxXent(torch.autograd.Function):
    """Batch-mean softmax cross-entropy of (x W^T + b) whose backward is the closed form (no autograd inside).

    apply(x (B, d), W (C, d), b (C,) or None, y (B,)) -> scalar loss. Gradients flow to x, W and b.
    """

    @staticmethod
    def forward(ctx, x, W, b, y):
        _check(x, W, b, y)
        p, loss = _probs_and_loss(x @ W.T if b is None else x @ W.T + b, y)
        ctx.save_for_backward(x, W, p, y)
        ctx.has_bias = b is not None
        return loss.mean()

    @staticmethod
    @once_differentiable  # no double backward: the saved softmax is not a function of the inputs
    def backward(ctx, grad_out):
        x, W, p, y = ctx.saved_tensors
        B = x.shape[0]
        G = p.clone()  # (B, C): dl/dz = p - onehot(y), times dL/dl / B for the mean
        G[torch.arange(B, device=x.device), y.long()] -= 1.0
        G = (G * (grad_out / B)).to(x.dtype)
        dx = G @ W if ctx.needs_input_grad[0] else None  # (B, d)
        dW = G.T @ x if ctx.needs_input_grad[1] else None  # (C, d)
        db = G.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (C,)
        return dx, dW, db, None
