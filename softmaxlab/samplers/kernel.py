"""A model-adaptive proposal: Blanc & Rendle's quadratic kernel, q(j | h) proportional to alpha (h . w_j)^2 + 1.

Sampled softmax is unbiased only when q is proportional to exp(z) (Blanc & Rendle 2018, "Adaptive Sampled Softmax
with Kernel Based Sampling"); a kernel that grows with |h . w_j| tracks the model and shrinks the bias at small
K. Per example the kernel's mass over a set S of classes is

    m_S(h) = alpha h^T M_S h + |S|,    M_S = sum_{j in S} w_j w_j^T  (d x d),

so a draw descends a binary tree whose nodes hold M_S and |S| for halves of the classes: at each node it goes
left with probability m_left / m_node, then picks a class inside the leaf's bucket by its own kernel value.
That is exact: q(j | h) = (alpha (h . w_j)^2 + 1) / (alpha h^T M h + C) with M = W^T W, and `probs` returns it,
so logq and importance get exact expected counts. Cost per draw: d^2 per tree level (log2(C / bucket) of them)
plus bucket * d in the leaf; (b, node) pairs shared by several draws are computed once. Memory: about
2 C / bucket d x d matrices (float64). The tree is a snapshot of W: `rebuild(W)` (every N steps) refreshes it,
and until then q is that snapshot's, still exact for the draws it makes.

With `bias`, the kernel is on the full logit: h is augmented with a 1 and w_j with b_j, so h . w_j = z_j.
With `rank` r, both go through one fixed Gaussian projection P (r x d, entries N(0, 1/r)) first, so the kernel
is on (P h) . (P w_j), which approximates h . w_j (Johnson-Lindenstrauss) at d^2 / r^2 less cost per level:
q stays exact for the draws it makes, it only tracks the model less closely.
"""

from __future__ import annotations

import math

import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers.core import Draw, _first_k_distinct

_PAIRS = 2048  # (example, node) pairs per chunk: bounds the gathered (pairs, d, d) block (268 MB at d = 128)


class KernelSampler:
    """q(j | h) = (alpha (h . w_j)^2 + 1) / (alpha h^T W^T W h + C), drawn per example by a tree of moments."""

    name = "kernel"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, alpha: float = 100.0,
                 bucket: int = 128, rank: int | None = None, seed: int = 0):
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise SoftmaxlabError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1:
            raise SoftmaxlabError(f"bucket must be an integer >= 1, got {bucket!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise SoftmaxlabError(f"rank must be a positive integer or None, got {rank!r}")
        self.alpha, self.bucket, self.rank = float(alpha), bucket, rank
        self.P = None
        if rank is not None and isinstance(weight, torch.Tensor) and weight.dim() == 2:
            g = torch.Generator().manual_seed(seed)
            self.P = torch.randn(rank, weight.shape[1] + (bias is not None), generator=g, dtype=torch.float64
                                 ).div_(math.sqrt(rank)).to(weight.device)
        self.rebuild(weight, bias)

    def rebuild(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> KernelSampler:
        """Snapshot W (and b) and rebuild the tree: C d^2 flops for the leaves, then pairwise sums."""
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[0] < 2:
            raise SoftmaxlabError(f"weight must be a (C >= 2, d) tensor, got {tuple(getattr(weight, 'shape', ()))}")
        C = weight.shape[0]
        W = weight.detach().to(torch.float64)
        if bias is not None:
            if tuple(bias.shape) != (C,):
                raise SoftmaxlabError(f"bias must have shape ({C},), got {tuple(bias.shape)}")
            W = torch.cat([W, bias.detach().to(torch.float64)[:, None]], 1)
        if not bool(torch.isfinite(W).all()):
            raise SoftmaxlabError("weight or bias holds NaN or inf: the kernel sampler needs finite weights")
        self.dim = W.shape[1] - (bias is not None)
        if self.P is not None:
            W = W @ self.P.T  # (C, r)
        self.num_classes, self.support, self.device, self.has_bias = C, C, weight.device, bias is not None
        n_leaves = 1 << max(0, math.ceil(math.log2(math.ceil(C / self.bucket))))
        pad = n_leaves * self.bucket - C
        self.W = torch.cat([W, W.new_zeros(pad, W.shape[1])])  # (n_leaves * bucket, d'), padding rows 0
        real = torch.arange(n_leaves * self.bucket, device=W.device) < C
        Wl = self.W.view(n_leaves, self.bucket, -1)
        moments = [torch.einsum("lbi,lbj->lij", Wl, Wl)]  # leaves: (n_leaves, d', d')
        counts = [real.view(n_leaves, self.bucket).sum(1).to(torch.float64)]
        while moments[0].shape[0] > 1:  # parents are sums of child pairs, up to the root
            moments.insert(0, moments[0].view(-1, 2, *moments[0].shape[1:]).sum(1))
            counts.insert(0, counts[0].view(-1, 2).sum(1))
        self.moments, self.counts, self.real = moments, counts, real
        return self

    def _features(self, h: torch.Tensor) -> torch.Tensor:
        if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[1] != self.dim:
            raise SoftmaxlabError(f"h must be (B, {self.dim}) features, got {tuple(getattr(h, 'shape', ()))}")
        h = h.detach().to(self.W.device, torch.float64)
        h = torch.cat([h, h.new_ones(h.shape[0], 1)], 1) if self.has_bias else h
        return h @ self.P.T if self.P is not None else h

    def _mass(self, level: int, rows: torch.Tensor, nodes: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """alpha h_b^T M_n h_b + |n| for each (row b, node n) at `level`, each distinct pair computed once."""
        key = rows * len(self.counts[level]) + nodes
        uniq, inv = torch.unique(key, return_inverse=True)
        ub, un = uniq // len(self.counts[level]), uniq % len(self.counts[level])
        out = torch.empty(len(uniq), dtype=torch.float64, device=h.device)
        for s in range(0, len(uniq), _PAIRS):
            b, n = ub[s:s + _PAIRS], un[s:s + _PAIRS]
            out[s:s + _PAIRS] = torch.einsum("pi,pij,pj->p", h[b], self.moments[level][n], h[b])
        return (self.alpha * out + self.counts[level][un])[inv]

    def probs(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """q(ids | h_b), float64, for ids (B, K) (or (K,), the same ids for every row)."""
        hf = self._features(h)
        ids = ids.to(hf.device).long()
        ids = ids.expand(hf.shape[0], -1) if ids.dim() == 1 else ids
        s = torch.einsum("bd,bkd->bk", hf, self.W[ids])  # (B, K) h . w_j
        root = self.alpha * torch.einsum("bi,ij,bj->b", hf, self.moments[0][0], hf) + self.num_classes
        return (self.alpha * s * s + 1.0) / root[:, None]

    def _draw(self, hf: torch.Tensor, n: int, generator) -> torch.Tensor:
        """n draws with replacement per row of hf: ids (B, n)."""
        B = hf.shape[0]
        rows = torch.arange(B, device=hf.device).repeat_interleave(n)  # (B n,)
        node = torch.zeros(B * n, dtype=torch.long, device=hf.device)
        mass = self._mass(0, rows, node, hf)
        for level in range(1, len(self.counts)):  # go left with probability m_left / m_node
            left = 2 * node
            m_left = self._mass(level, rows, left, hf)
            u = torch.rand(B * n, generator=generator, dtype=torch.float64, device=hf.device)
            right = u * mass >= m_left
            node = left + right
            mass = torch.where(right, mass - m_left, m_left)
        # inside the leaf's bucket: a class by its kernel value (padding rows weigh 0); the CDF of each distinct
        # (row, leaf) pair is computed once, then each draw inverts its pair's CDF
        key = rows * len(self.counts[-1]) + node
        uniq, inv = torch.unique(key, return_inverse=True)
        ub, ul = uniq // len(self.counts[-1]), uniq % len(self.counts[-1])
        span = torch.arange(self.bucket, device=hf.device)
        cdf = torch.empty(len(uniq), self.bucket, dtype=torch.float64, device=hf.device)
        for s in range(0, len(uniq), _PAIRS):
            m = ul[s:s + _PAIRS, None] * self.bucket + span  # (pairs, bucket) class ids
            v = torch.einsum("pd,pbd->pb", hf[ub[s:s + _PAIRS]], self.W[m])
            cdf[s:s + _PAIRS] = torch.cumsum((self.alpha * v * v + 1.0) * self.real[m], 1)
        out = torch.empty(B * n, dtype=torch.long, device=hf.device)
        for s in range(0, B * n, 16 * _PAIRS):
            c = cdf[inv[s:s + 16 * _PAIRS]]  # (draws, bucket)
            u = torch.rand(len(c), 1, generator=generator, dtype=torch.float64, device=hf.device) * c[:, -1:]
            pick = torch.searchsorted(c, u, right=True).clamp_max_(self.bucket - 1).squeeze(1)
            out[s:s + 16 * _PAIRS] = node[s:s + 16 * _PAIRS] * self.bucket + pick
        return out.view(B, n)

    def sample(self, h: torch.Tensor, K: int, generator: torch.Generator | None = None,
               unique: bool = False) -> Draw:
        """K ids per row of h (B, d) from q(. | h_b): (B, K); with unique, K distinct ids per row, drawn with
        replacement until K distinct have appeared (TF's algorithm), num_tries (B,) the draws that took."""
        if isinstance(K, bool) or not isinstance(K, int) or K < 1 or (unique and K >= self.num_classes):
            raise SoftmaxlabError(f"num_sampled must be an integer in [1, {self.num_classes}) for unique draws, "
                                  f"got {K!r}" if unique else f"num_sampled must be an integer >= 1, got {K!r}")
        hf = self._features(h)
        if not unique:
            return Draw(self._draw(hf, K, generator), K)
        draws = self._draw(hf, 2 * K, generator)
        while True:
            ids, tries, n_distinct = _first_k_distinct(draws, K)
            if n_distinct >= K:
                return Draw(ids, tries)
            draws = torch.cat([draws, self._draw(hf, draws.shape[1], generator)], 1)

    def sampled_values(self, h: torch.Tensor, labels: torch.Tensor, K: int, generator=None, unique: bool = False):
        """sampled_values for sampled_softmax_loss / nce_loss (keep remove_accidental_hits=True): (ids (B, K),
        true_expected_count (B, T), sampled_expected_count (B, K), q (B, K), num_tries), the counts K q with
        replacement or 1 - (1 - q)^T for unique draws."""
        y = labels[:, None] if labels.dim() == 1 else labels
        draw = self.sample(h, K, generator, unique)
        qs, qy = self.probs(h, draw.ids), self.probs(h, y)
        if unique:
            T = draw.num_tries.to(torch.float64)[:, None]
            count = lambda q: -torch.expm1(T * torch.log1p(-q))
        else:
            count = lambda q: K * q
        return draw.ids, count(qy), count(qs), qs, draw.num_tries
