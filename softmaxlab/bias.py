"""Bias study behind `softmaxlab sampled bias`: how far each sampled estimator is from the full softmax.

For a batch of logit vectors z (N, C) with labels y, each estimator replaces the partition function
Z = sum_j e^{z_j} by an implied normalizer D_hat such that its loss is log D_hat - z_c:
    as_posed    D_hat = e^{z_c} + (1/K) sum_k q_{s_k} e^{z_{s_k}}           K draws from q' (c excluded)
    importance  D_hat = e^{z_c} + sum_k e^{z_{s_k}} / (K q'_{s_k})           K draws from q' (c excluded)
    logq        D_hat = e^{z_c} + Q_c sum_{k: s_k != c} e^{z_{s_k}} / Q_{s_k}  K draws from q, hits masked,
                Q = K q (TensorFlow's sampled_softmax_loss with replacement)
For each estimator and K, over n_draws independent draws per example, we report
  loss_bias    E[loss_hat] - loss (the mean over draws and examples) and its standard error over draws;
  d_rel_bias   E[(D_hat - Z) / Z] and its standard error; d_rel_abs = E|D_hat - Z| / Z;
  grad_cosine  cosine between the Monte Carlo mean of the sampled gradient wrt the logits (over the draws)
               and the full gradient p - onehot(c), averaged over examples. It is dominated by the true-class
               coordinate p_c - 1 (the others sum to 1 - p_c but spread over C classes), so it stays near 1
               even for a gradient 100 times too small: read it with
  grad_rel_err ||E[g_hat] - g|| / ||g||, averaged over examples (includes a Monte Carlo noise floor of about
               sqrt((e^{scale^2} - 1) / (n_draws K)) for importance sampling), and
  grad_true_bias  E[g_hat_c] - (p_c - 1), the bias of the true-class coordinate (as_posed: about 1 - p_c).
mixed=True adds two rows per K (own generator, seed + 1, so the rows above keep their numbers): the mixed
negatives of softmaxlab/mixed.py. Example i's batch is N rows drawn i.i.d. from the N examples, so its N - 1
batch mates' labels are i.i.d. from pi = the examples' label frequencies, plus K draws from q; every copy of c
is masked and Q_j = (N - 1) pi_j + K q_j (docs/derivations.md, section 12):
    mixed_importance  D_hat = e^{z_c} + sum_{k: s_k != c} e^{z_{s_k}} / Q_{s_k}
    mixed_logq        D_hat = e^{z_c} + Q_c sum_{k: s_k != c} e^{z_{s_k}} / Q_{s_k}
Default logits: z_ij = scale * N(0, 1) with scale 1.5 and labels drawn from softmax(z_i) (a calibrated
model). With scale 1.5 one sample e^{z}/q has relative variance e^{2.25} - 1 = 8.5, so importance sampling
has a visible Jensen bias at K = 8 that shrinks like 1/K, while the as-posed D stays near e^{z_c}.
n_draws is capped so that n_draws * N * K <= max_elements (default 2^22): C = 100000 runs in seconds.
"""

from __future__ import annotations

import math

import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers import ProbsSampler, make_sampler

ESTIMATORS = ("as_posed", "importance", "logq")
MIXED_ESTIMATORS = ("mixed_importance", "mixed_logq")  # in-batch + proposal, bias_study(mixed=True)


def _check(classes, samples, n_draws, logits):
    if logits is None and (not isinstance(classes, int) or classes < 2):
        raise SoftmaxlabError(f"classes must be an integer >= 2, got {classes!r}")
    if not samples or any((not isinstance(k, int)) or k < 1 for k in samples):
        raise SoftmaxlabError(f"samples must be positive integers, got {samples!r}; e.g. 8,64,512")
    if not isinstance(n_draws, int) or n_draws < 2:
        raise SoftmaxlabError(f"n_draws must be an integer >= 2, got {n_draws!r}")
    if logits is not None:
        if not isinstance(logits, (tuple, list)) or len(logits) != 2:
            raise SoftmaxlabError("logits must be a pair (z (N, C) float tensor, y (N,) labels)")
        z, y = logits
        if z.dim() != 2 or z.shape[1] < 2 or y.dim() != 1 or y.shape[0] != z.shape[0]:
            raise SoftmaxlabError(
                f"logits must be z (N, C >= 2) and y (N,), got {tuple(z.shape)} and {tuple(y.shape)}"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
            raise SoftmaxlabError(f"labels must lie in [0, {z.shape[1]}); fix the labels passed with the logits")
        if not bool(torch.isfinite(z).all()):
            raise SoftmaxlabError("logits contain NaN or inf; pass finite logits")


def bias_study(
    classes: int = 10,
    samples=(8, 64, 512),
    sampler: str = "uniform",
    logits=None,
    n_draws: int = 2000,
    seed: int = 0,
    n_examples: int = 64,
    scale: float = 1.5,
    max_elements: int = 1 << 22,
    mixed: bool = False,
) -> list[dict]:
    """One row per (estimator, K): loss bias, relative error of D, gradient cosine (see the module docstring);
    mixed: also the in-batch + proposal rows."""
    _check(classes, samples, n_draws, logits)
    g = torch.Generator().manual_seed(seed)
    if logits is None:
        z = scale * torch.randn(n_examples, classes, generator=g, dtype=torch.float64)
        y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    else:
        z, y = logits[0].detach().to("cpu", torch.float64), logits[1].detach().to("cpu").long()
    N, C = z.shape
    if mixed and N < 2:
        raise SoftmaxlabError("mixed=True needs >= 2 examples: a batch mate's label is an in-batch negative")
    counts = torch.bincount(y, minlength=C).double() + 1.0  # add-one: every class keeps q > 0
    smp = make_sampler(sampler, C, counts=counts, power=1.0)
    rows_idx = torch.arange(N)
    zc = z[rows_idx, y]  # (N,)
    lse = torch.logsumexp(z, 1)  # (N,) log Z
    exact = lse - zc  # (N,) exact loss
    g_full = torch.softmax(z, 1)
    g_full[rows_idx, y] -= 1.0
    qc = smp.probs(y)  # (N,)
    gm = torch.Generator().manual_seed(seed + 1)  # the mixed rows' own draws
    pi = ProbsSampler(torch.bincount(y, minlength=C).double() / N) if mixed else None  # batch mates' labels
    out = []
    for K in samples:
        n = max(2, min(n_draws, max_elements // (N * K)))
        for est in ESTIMATORS:
            out.append(_one(est, K, n, z, y, zc, lse, exact, g_full, qc, smp, g, sampler))
        if mixed:
            n = max(2, min(n_draws, max_elements // (N * (K + N - 1))))
            out += [_one(est, K, n, z, y, zc, lse, exact, g_full, qc, smp, gm, sampler, pi) for est in MIXED_ESTIMATORS]
    return out


def _one(est, K, n, z, y, zc, lse, exact, g_full, qc, smp, g, sampler_name, pi=None) -> dict:
    N, C = z.shape
    M = K + N - 1 if pi is not None else K  # candidates per example
    chunk = max(1, min(n, (1 << 21) // (N * M)))  # draws per chunk: bounded memory
    tally = Tally(N, C)
    done = 0
    while done < n:
        m = min(chunk, n - done)
        e = torch.arange(N).repeat(m)  # (m*N,) example of each row
        if pi is not None:  # N - 1 batch mates' labels from pi, then K draws from q: (m*N, N - 1 + K)
            ids = torch.cat([pi.sample((N - 1) * m * N, generator=g).ids.view(m * N, N - 1),
                             smp.sample(K * m * N, generator=g).ids.view(m * N, K)], 1)
        elif est == "logq":
            ids = smp.sample(K * m * N, generator=g).ids.view(m * N, K)
        else:
            ids = smp.sample(K, generator=g, exclude=y.repeat(m)).ids  # (m*N, K), c excluded
        flat = (e * C)[:, None] + ids  # (m*N, K) positions in z.view(-1)
        zs = z.view(-1)[flat]  # (m*N, K) sampled logits
        q = smp.probs(ids)
        c, ze = y[e], zc[e]
        alpha = torch.zeros(m * N, dtype=torch.float64)
        if pi is not None:
            Q = (N - 1) * pi.probs(ids) + K * q  # (m*N, M) the mixture's expected counts
            beta = torch.where(ids == c[:, None], -torch.inf, -torch.log(Q))  # every copy of c masked
            if est == "mixed_logq":
                alpha = -torch.log((N - 1) * pi.probs(c) + K * qc[e])  # -log Q_c
        elif est == "as_posed":
            beta = torch.log(q / K)
        elif est == "importance":
            beta = torch.log((1.0 - qc[e])[:, None] / (K * q))  # 1 / (K q'_j)
        else:
            beta = torch.where(ids == c[:, None], -torch.inf, -torch.log(K * q))  # hits masked
            alpha = -torch.log(K * qc[e])
        o = torch.cat([(ze + alpha)[:, None], zs.add_(beta)], 1)  # (m*N, 1 + K) candidate log-weights
        tally.add(o, ze, alpha, e, c, flat, exact, lse)
        done += m
    return tally.row(est, K, sampler_name, n, exact, g_full, y)


class Tally:
    """A bias-study row's statistics, accumulated over chunks of draws (bias.py and kernel_bias.py)."""

    def __init__(self, N: int, C: int):
        self.N, self.C = N, C
        self.bias, self.rel, self.dabs = [], [], 0.0  # per draw: mean loss bias, mean (D - Z) / Z; sum |D - Z| / Z
        self.gsum = torch.zeros(N * C, dtype=torch.float64)  # sum over draws of the gradient wrt the logits

    def add(self, o, ze, alpha, e, c, flat, exact, lse) -> None:
        """One chunk: o (m N, 1 + K) candidate logits (the true one first; overwritten), ze, alpha (m N,) the true
        logit and its log-weight, e and c (m N,) each row's example and label, flat (m N, K) the candidates'
        positions in z.view(-1)."""
        m = len(e) // self.N
        lse_o = torch.logsumexp(o, 1)
        loss_hat = lse_o - ze - alpha  # (m N,)
        self.bias.append((loss_hat - exact[e]).view(m, self.N).mean(1))
        rel = torch.expm1(loss_hat + ze - lse[e])  # (D_hat - Z) / Z, log D_hat = loss_hat + z_c
        self.rel.append(rel.view(m, self.N).mean(1))
        self.dabs += float(rel.abs().sum())
        P = o.sub_(lse_o[:, None]).exp_()  # softmax over the candidates = gradient wrt candidate logits
        self.gsum.index_add_(0, e * self.C + c, P[:, 0] - 1.0)
        self.gsum.index_add_(0, flat.reshape(-1), P[:, 1:].reshape(-1))

    def row(self, est, K, sampler_name, n, exact, g_full, y, **extra) -> dict:
        N, C = self.N, self.C
        b, r = torch.cat(self.bias), torch.cat(self.rel)
        g_mean = self.gsum.view(N, C) / n
        cos = torch.nn.functional.cosine_similarity(g_mean, g_full, dim=1, eps=1e-300)
        rel = (g_mean - g_full).norm(dim=1) / g_full.norm(dim=1)
        rows_idx = torch.arange(N)
        true_bias = g_mean[rows_idx, y] - g_full[rows_idx, y]  # E[g_c] - (p_c - 1)
        return dict(
            estimator=est, num_sampled=K, classes=C, sampler=sampler_name, n_examples=N, n_draws=n,
            exact_loss=float(exact.mean()), loss_mean=float(exact.mean() + b.mean()),
            loss_bias=float(b.mean()), loss_bias_se=float(b.std() / math.sqrt(n)),
            d_rel_bias=float(r.mean()), d_rel_bias_se=float(r.std() / math.sqrt(n)), d_rel_abs=self.dabs / (n * N),
            grad_cosine=float(cos.mean()), grad_rel_err=float(rel.mean()), grad_true_bias=float(true_bias.mean()),
            **extra,
        )


def format_table(rows: list[dict]) -> str:
    """Markdown table of the study's rows."""
    head = ("| estimator | K | loss bias (± se) | E[(D-Z)/Z] (± se) | E abs(D-Z)/Z | grad cosine "
            "| grad rel. err | true-class grad bias | draws |")
    return "\n".join([head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"] + [
        f"| {r['estimator']} | {r['num_sampled']} | {r['loss_bias']:+.4f} ± {r['loss_bias_se']:.4f} | "
        f"{r['d_rel_bias']:+.4f} ± {r['d_rel_bias_se']:.4f} | {r['d_rel_abs']:.4f} | "
        f"{r['grad_cosine']:.4f} | {r['grad_rel_err']:.4f} | {r['grad_true_bias']:+.4f} | {r['n_draws']} |"
        for r in rows
    ])
