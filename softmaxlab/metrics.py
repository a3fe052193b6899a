"""Exact full-softmax metrics over C classes without a (B, C) tensor: the classes are walked in chunks with an
online log-sum-exp and a running top-k, so peak memory is O(B * chunk_size) whatever C is."""

from __future__ import annotations

import math

import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled_kernels import linear

_CHUNK_ELEMENTS = 1 << 22  # default chunk: B * chunk_size logits (16 MB in float32)


@torch.no_grad()
def exact_metrics(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
                  topk=(1, 5, 10), chunk_size: int | None = None) -> dict[str, float]:
    """Mean negative log-likelihood, perplexity and top-k accuracy of logits inputs @ weight.T + bias.

    inputs (B, d), weight (C, d), bias (C,) or None, labels (B,). Logits are computed chunk by chunk in the
    inputs' dtype, the log-sum-exp in float32 (float64 for float64). A row counts for top-k when its label is
    among the k indices torch.topk returns over that row's logits (exact ties at the k-th place may be broken
    otherwise). Returns {'loss', 'perplexity', 'top1', 'top5', ...}."""
    if inputs.dim() != 2 or weight.dim() != 2 or weight.shape[1] != inputs.shape[1]:
        raise SoftmaxlabError(f"inputs (B, d) and weight (C, d) must agree, got {tuple(inputs.shape)} and "
                              f"{tuple(weight.shape)}")
    B, C = inputs.shape[0], weight.shape[0]
    y = labels.reshape(-1).to(inputs.device, torch.long)
    if y.shape[0] != B:
        raise SoftmaxlabError(f"labels must have shape ({B},), got {tuple(labels.shape)}; one label per row")
    if B and (int(y.min()) < 0 or int(y.max()) >= C):
        raise SoftmaxlabError(f"labels must lie in [0, {C})")
    ks = sorted({int(k) for k in topk})
    if ks and (ks[0] < 1 or ks[-1] > C):
        raise SoftmaxlabError(f"topk must lie in [1, {C}], got {tuple(topk)}")
    kmax = ks[-1] if ks else 0
    n = max(1, _CHUNK_ELEMENTS // max(B, 1)) if chunk_size is None else chunk_size
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SoftmaxlabError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    acc = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    m = torch.full((B,), -math.inf, dtype=acc, device=inputs.device)  # running max
    s = torch.zeros(B, dtype=acc, device=inputs.device)  # running sum of exp(z - m)
    z_y = torch.zeros(B, dtype=acc, device=inputs.device)
    top_v = torch.empty(B, 0, dtype=acc, device=inputs.device)  # running top-k values and class ids
    top_i = torch.empty(B, 0, dtype=torch.long, device=inputs.device)
    for lo in range(0, C, n):
        hi = min(C, lo + n)
        z = linear(inputs, weight[lo:hi])  # (B, n) in the inputs' dtype
        z = (z if bias is None else z + bias[lo:hi]).to(acc)
        m_new = torch.maximum(m, z.amax(1))
        s = s * torch.exp(m - m_new) + torch.exp(z - m_new[:, None]).sum(1)
        m = m_new
        inside = (y >= lo) & (y < hi)
        z_y = torch.where(inside, z.gather(1, (y - lo).clamp(0, hi - lo - 1)[:, None]).squeeze(1), z_y)
        if kmax:
            v, i = torch.topk(z, min(kmax, hi - lo), dim=1)
            top_v, sel = torch.topk(torch.cat([top_v, v], 1), min(kmax, top_v.shape[1] + v.shape[1]), dim=1)
            top_i = torch.cat([top_i, i + lo], 1).gather(1, sel)
    nll = (m + torch.log(s) - z_y).double()
    out = {"loss": float(nll.mean()), "perplexity": float(torch.exp(nll.mean()))}
    for k in ks:
        out[f"top{k}"] = float((top_i[:, :k] == y[:, None]).any(1).double().mean())
    return out
