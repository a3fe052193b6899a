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

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers import make_sampler
from softmaxlab.samplers.kernel import KernelSampler

PROPOSALS = ("loguniform", "unigram", "kernel")


def lowrank_logits(classes: int, dim: int, n_examples: int, scale: float, g: torch.Generator):
    """(h (N, d) the kernel's features, W (C, d), z = h W^T (N, C), y (N,) drawn from softmax(z))."""
    h = scale * torch.randn(n_examples, dim, generator=g, dtype=torch.float64)
    W = torch.randn(classes, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    z = h @ W.T
    return h, W, z, torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)


def kernel_bias_study(classes: int = 100_000, samples=(8, 64, 512), dim: int = 32, alpha: float = 100.0,
                      n_draws: int = 2000, seed: int = 0, n_examples: int = 64, scale: float = 1.5,
                      max_elements: int = 1 << 22, proposals=PROPOSALS) -> list[dict]:
    """One row per (proposal, K, estimator); see the module docstring."""
    if not isinstance(classes, int) or classes < 2:
        raise SoftmaxlabError(f"classes must be an integer >= 2, got {classes!r}")
    if not samples or any(not isinstance(k, int) or k < 1 for k in samples):
        raise SoftmaxlabError(f"samples must be positive integers, got {samples!r}; e.g. 8,64,512")
    g = torch.Generator().manual_seed(seed)
    h, W, z, y = lowrank_logits(classes, dim, n_examples, scale, g)
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
    acc = {est: dict(bias=[], rel=[], dabs=0.0, gsum=torch.zeros(N * C, dtype=torch.float64))
           for est in ("importance", "logq")}
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
        for est, a in acc.items():
            alpha = -torch.log(Qc) if est == "logq" else torch.zeros_like(ze)
            o = torch.cat([(ze + alpha)[:, None], logits], 1)  # (m N, 1 + K) candidate logits
            lse_o = torch.logsumexp(o, 1)
            loss_hat = lse_o - ze - alpha
            a["bias"].append((loss_hat - exact[e]).view(m, N).mean(1))
            rel = torch.expm1(loss_hat + ze - lse[e])  # (D_hat - Z) / Z
            a["rel"].append(rel.view(m, N).mean(1))
            a["dabs"] += float(rel.abs().sum())
            P = (o - lse_o[:, None]).exp()  # the gradient wrt the candidates' logits
            a["gsum"].index_add_(0, e * C + c, P[:, 0] - 1.0)
            a["gsum"].index_add_(0, flat.reshape(-1), P[:, 1:].reshape(-1))
        done += m
    rows = []
    for est, a in acc.items():
        b, r = torch.cat(a["bias"]), torch.cat(a["rel"])
        g_mean = a["gsum"].view(N, C) / n
        cos = torch.nn.functional.cosine_similarity(g_mean, g_full, dim=1, eps=1e-300)
        rel_g = (g_mean - g_full).norm(dim=1) / g_full.norm(dim=1)
        rows.append(dict(
            estimator=est, num_sampled=K, classes=C, sampler=name, n_examples=N, n_draws=n,
            exact_loss=float(exact.mean()), loss_mean=float(exact.mean() + b.mean()), loss_bias=float(b.mean()),
            loss_bias_se=float(b.std() / math.sqrt(n)), d_rel_bias=float(r.mean()),
            d_rel_bias_se=float(r.std() / math.sqrt(n)), d_rel_abs=a["dabs"] / (n * N),
            grad_cosine=float(cos.mean()), grad_rel_err=float(rel_g.mean()),
            grad_true_bias=float((g_mean[torch.arange(N), y] - g_full[torch.arange(N), y]).mean()),
            draw_ms=1e3 * draw_s / (n * N)))
    return rows
