"""The bias study with a model-adaptive proposal: KernelSampler against fixed proposals on the same logits.

`softmaxlab sampled bias --sampler kernel`. The kernel needs the logits' factors, so the logits are low-rank:
z = scale * H W^T with H (N, d) ~ N(0, I) and W (C, d) ~ N(0, I / d), so each z_ij is N(0, scale^2) as in
bias.py's default, and labels y_i ~ softmax(z_i) (a calibrated model). For each proposal (log-uniform, unigram
(add-one counts of the labels, as bias.py), kernel q(j | h_i) with h_i = scale H_i), each K and each estimator
(importance: D = e^{z_c} + sum_k m_k e^{z_{s_k}} / Q_{s_k}; logq: TensorFlow's), draws from q with the true
class's hits masked, the rows report what bias.py's do (loss bias and its standard error over draws, the
relative error of D, the gradient's cosine and relative error against the full softmax gradient), plus the
sampler's cost: draw_ms, the time per (example, K draws). Both estimators use the same draws.
"""

from __future__ import annotations

import math
import time

import torch

from softmaxlab.bias import Tally
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers import make_sampler
from softmaxlab.samplers.kernel import KernelSampler

PROPOSALS = ("loguniform", "unigram", "kernel")


def kernel_bias_study(classes: int = 100_000, samples=(8, 64, 512), dim: int = 32, alpha: float = 100.0,
                      n_draws: int = 2000, seed: int = 0, n_examples: int = 64, scale: float = 1.5,
                      max_elements: int = 1 << 22, proposals=PROPOSALS) -> list[dict]:
    """One row per (proposal, K, estimator); see the module docstring."""
    if not isinstance(classes, int) or classes < 2:
        raise SoftmaxlabError(f"classes must be an integer >= 2, got {classes!r}")
    if not samples or any(not isinstance(k, int) or k < 1 for k in samples):
        raise SoftmaxlabError(f"samples must be positive integers, got {samples!r}; e.g. 8,64,512")
    g = torch.Generator().manual_seed(seed)
    h = scale * torch.randn(n_examples, dim, generator=g, dtype=torch.float64)  # (N, d) the kernel's features
    W = torch.randn(classes, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)  # (C, d)
    z = h @ W.T  # (N, C)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)  # (N,) drawn from softmax(z)
    N, C = z.shape
    lse = torch.logsumexp(z, 1)
    zc = z[torch.arange(N), y]
    g_full = torch.softmax(z, 1)
    g_full[torch.arange(N), y] -= 1.0
    counts = torch.bincount(y, minlength=C).double() + 1.0
    out = []
    for name in proposals:
        smp = KernelSampler(W, alpha=alpha) if name == "kernel" else make_sampler(name, C, counts=counts, power=1.0)
        for K in samples:
            n = max(2, min(n_draws, max_elements // (N * K)))
            out += _rows(name, smp, K, n, h, z, y, zc, lse, g_full, g)
    return out


def _draws(name, smp, K: int, e: torch.Tensor, h, y, g):
    """ids (R, K), their expected counts Q (R, K) and the true class's Q_c (R,), for the examples e (R,)."""
    if name == "kernel":
        ids = smp.sample(h[e], K, generator=g).ids
        return ids, K * smp.probs(h[e], ids), K * smp.probs(h[e], y[e, None])[:, 0]
    ids = smp.sample(K * len(e), generator=g).ids.view(len(e), K)
    return ids, K * smp.probs(ids), K * smp.probs(y[e])


def _rows(name, smp, K, n, h, z, y, zc, lse, g_full, g) -> list[dict]:
    N, C = z.shape
    exact = lse - zc
    chunk = max(1, min(n, (1 << 21) // (N * K)))
    tallies = {est: Tally(N, C) for est in ("importance", "logq")}
    done, draw_s = 0, 0.0
    while done < n:
        m = min(chunk, n - done)
        e = torch.arange(N).repeat(m)  # (m N,) the example of each row of draws
        t0 = time.perf_counter()
        ids, Q, Qc = _draws(name, smp, K, e, h, y, g)
        draw_s += time.perf_counter() - t0
        flat = (e * C)[:, None] + ids
        c, ze = y[e], zc[e]
        logits = torch.where(ids == c[:, None], -torch.inf, z.view(-1)[flat] - torch.log(Q))  # hits masked
        for est, tally in tallies.items():
            alpha = -torch.log(Qc) if est == "logq" else torch.zeros_like(ze)
            tally.add(torch.cat([(ze + alpha)[:, None], logits], 1), ze, alpha, e, c, flat, exact, lse)
        done += m
    return [t.row(est, K, name, n, exact, g_full, y, draw_ms=1e3 * draw_s / (n * N)) for est, t in tallies.items()]
