"""Proposal distributions q over C classes for sampled softmax: uniform, log-uniform (Zipf), unigram.

Every sampler draws class ids on its device with a torch.Generator, and reports
  probs(ids)            q_j, float64
  expected_count(ids)   Q_j, the expected number of times j appears in one draw of K ids:
                        K q_j with replacement; for unique draws (sampling with replacement until K
                        distinct ids have appeared, after T tries, as TensorFlow does) the inclusion
                        probability, exactly K / C for the uniform sampler and TensorFlow's
                        approximation 1 - (1 - q_j)^T for the others.

sample(K, unique=False, exclude=None) returns Draw(ids, num_tries):
  exclude=None        ids (K,), one draw shared by the batch (accidental hits are masked by the loss).
  exclude=(B,) or (B, T) true ids: ids (B, K), one draw per row from q restricted to the classes not in
                      that row, q'_j = q_j / (1 - q(excluded)). Implemented by rejection: rejected entries
                      are redrawn until none is left (one host sync per round, ~1 round when q(excluded)
                      is small; exact, since a rejected draw is simply thrown away).
  unique=True         ids distinct (per row with exclude). Draws with replacement in vectorised chunks,
                      keeps the first K distinct ids in draw order and returns the number of tries T
                      (the index of the K-th first occurrence). This is TensorFlow's algorithm, so the
                      set has the same law. It costs one host sync per chunk (usually one chunk).
                      With exclude, the same on each row's stream with its excluded ids thrown away (a
                      stream from q'); num_tries is then a (B,) tensor of q'-draws, and
                      expected_count_excluding gives 1 - (1 - q'_j)^T_b (uniform: exactly K / (C - n_b)).
Draws with replacement never sync with the host and never build a (C,)-sized tensor for the closed-form
samplers (uniform, log-uniform), so they work for C up to 1e8 and more.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers.alias import alias_table

_MAX_UNIQUE_DRAWS = 1 << 25  # give up on unique sampling after this many tries (pathological q)
_MAX_REJECTION_ROUNDS = 200  # give up on per-row exclusion after this many rounds (q(excluded) ~ 1)


def tf_expected_count(q: torch.Tensor, num_sampled: int, num_tries) -> torch.Tensor:
    """TensorFlow's ExpectedCountHelper (core/kernels/range_sampler.cc), in float64: K q when num_tries == K
    (always so without unique), else -expm1(T log1p(-q)). num_tries: an int, or (B,) per row of q (B, ...)."""
    T = torch.as_tensor(num_tries, device=q.device)
    T = T.reshape(T.shape + (1,) * (q.dim() - T.dim())) if T.dim() else T
    inclusion = -torch.expm1(T.to(torch.float64) * torch.log1p(-q))
    return torch.where(T == num_sampled, num_sampled * q, inclusion)


def check_probs(p: torch.Tensor, name: str) -> None:
    """A probability vector: finite, >= 0, summing to 1 within 1e-6 (a clear error naming `name` otherwise)."""
    if not bool(torch.isfinite(p).all()):
        raise SoftmaxlabError(f"{name} contain NaN or inf; pass finite probabilities")
    if bool((p < 0).any()):
        raise SoftmaxlabError(f"{name} contain negative values; pass non-negative probabilities")
    total = float(p.sum())
    if abs(total - 1.0) > 1e-6:
        raise SoftmaxlabError(f"{name} sum to {total:.8g}, not 1; normalise them (p / p.sum())")


class Draw(NamedTuple):
    ids: torch.Tensor
    """Sampled class ids, int64: (K,) for shared draws, (B, K) for per-row draws."""
    num_tries: int | torch.Tensor
    """Number of draws with replacement made: K without `unique`, T >= K with it ((B,) for per-row unique)."""


def _check_k(K, C: int, unique: bool, support: int) -> int:
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise SoftmaxlabError(f"num_sampled must be an integer >= 1, got {K!r}; pass a positive sample size")
    if unique and K >= C:
        raise SoftmaxlabError(
            f"unique sampling needs num_sampled < num_classes, got {K} >= {C}; lower num_sampled or use "
            "the full softmax"
        )
    if unique and K > support:
        raise SoftmaxlabError(
            f"unique sampling of {K} ids needs {K} classes with q > 0, only {support} have it; "
            "lower num_sampled or set unique=False"
        )
    return K


def _first_k_distinct(draws: torch.Tensor, K: int, ex: torch.Tensor | None = None):
    """First K distinct values of draws (M,) or of each row of draws (B, M), in draw order, skipping the values in
    that row of ex (B, T) if given: (ids (K,) or (B, K), tries, min over rows of n_distinct). tries: an int for
    (M,), else (B,) the draws (not excluded) up to the K-th distinct one."""
    M = draws.shape[-1]
    sorted_vals, perm = torch.sort(draws, dim=-1, stable=True)  # equal values keep draw order
    first_sorted = torch.ones_like(draws, dtype=torch.bool)
    first_sorted[..., 1:] = sorted_vals[..., 1:] != sorted_vals[..., :-1]
    first = torch.empty_like(first_sorted).scatter_(-1, perm, first_sorted)  # first occurrence, draw order
    if ex is not None:
        kept = ~(draws[:, :, None] == ex[:, None, :]).any(2)  # (B, M) draws from q' (excluded ones thrown away)
        first &= kept
    pos = torch.arange(M, device=draws.device).expand(draws.shape)
    key = torch.where(first, pos, pos + M)  # first occurrences come first, by position
    sel = torch.topk(key, min(K, M), dim=-1, largest=False, sorted=True).values
    ids = draws.gather(-1, sel % M)
    if draws.dim() == 1:
        n_distinct, last = torch.stack([first.sum(), sel[-1]]).tolist()  # the one host sync per chunk
        return ids, last + 1, n_distinct
    n_distinct = int(first.sum(1).min())  # the one host sync per chunk
    tries = sel[:, -1] + 1 if ex is None else torch.cumsum(kept, 1).gather(1, (sel[:, -1:] % M)).squeeze(1)
    return ids, tries, n_distinct


class Sampler:
    """Base class: subclasses implement `_draw(shape, generator)` and `probs(ids)`."""

    name = "sampler"

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise SoftmaxlabError(f"num_classes must be an integer >= 2, got {num_classes!r}; fix the class count")
        self.num_classes = num_classes
        self.device = torch.device(device or "cpu")
        self.support = num_classes  # number of classes with q > 0

    # --- to implement -------------------------------------------------------------------------------
    def _draw(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def probs(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------------
    def to(self, device) -> Sampler:
        """Move the sampler's tables to `device` (in place, like nn.Module.to) and return it."""
        self.device = torch.device(device)
        return self

    def _check_generator(self, generator):
        if generator is not None and generator.device.type != self.device.type:
            raise SoftmaxlabError(
                f"generator is on {generator.device} but the sampler draws on {self.device}; "
                "create the generator on the sampler's device or move the sampler with .to()"
            )

    def sample(
        self,
        K: int,
        generator: torch.Generator | None = None,
        unique: bool = False,
        exclude: torch.Tensor | None = None,
    ) -> Draw:
        """Draw K class ids from q (see the module docstring for `unique` and `exclude`)."""
        _check_k(K, self.num_classes, unique, self.support)
        self._check_generator(generator)
        if exclude is None:
            return self._sample_unique(K, generator) if unique else Draw(self._draw((K,), generator), K)
        ex = exclude.to(self.device)
        ex = ex[:, None] if ex.dim() == 1 else ex
        if ex.dim() != 2 or ex.dtype.is_floating_point:
            raise SoftmaxlabError(
                f"exclude must be integer ids of shape (B,) or (B, T), got {tuple(exclude.shape)} "
                f"{exclude.dtype}; pass the true labels"
            )
        if ex.shape[1] >= self.num_classes:
            raise SoftmaxlabError(
                f"cannot exclude {ex.shape[1]} true classes per row out of {self.num_classes}; "
                "use more classes or shared draws"
            )
        if unique:
            if K > self.support - ex.shape[1]:
                raise SoftmaxlabError(
                    f"unique per-row sampling of {K} ids needs {K} classes with q > 0 besides the "
                    f"{ex.shape[1]} true ones, only {self.support} have q > 0; lower num_sampled"
                )
            return self._sample_unique(K, generator, ex)
        ids = self._draw((ex.shape[0], K), generator)
        flat = ids.view(-1)
        pos = torch.nonzero((ids[:, :, None] == ex[:, None, :]).any(-1).view(-1)).squeeze(1)  # rejected entries
        for _ in range(_MAX_REJECTION_ROUNDS):
            if pos.numel() == 0:
                return Draw(ids, K)
            new = self._draw((pos.numel(),), generator)  # redraw only the rejected entries
            flat[pos] = new
            pos = pos[(new[:, None] == ex[pos // K]).any(1)]  # host sync (nonzero / masking), once per round
        raise SoftmaxlabError(
            f"per-row exclusion still rejected draws after {_MAX_REJECTION_ROUNDS} rounds: the excluded classes "
            "carry almost all of q; use shared draws (hits masked) or another sampler"
        )

    def _sample_unique(self, K: int, generator, ex: torch.Tensor | None = None) -> Draw:
        """K distinct ids by TensorFlow's algorithm; with ex (B, T), K per row, none of them in that row of ex: the
        algorithm on each row's stream of draws from q with the excluded ids thrown away (draws from q'), and
        num_tries (B,) the q'-draws per row."""
        C = self.num_classes
        # Expected tries for K distinct under a uniform q; skewed q need more, hence the doubling loop.
        m0 = math.log1p(-K / C) / math.log1p(-1.0 / C)
        rows = () if ex is None else (ex.shape[0],)
        draws = self._draw(rows + (int(1.25 * m0) + 2 * K + 64,), generator)
        while True:
            ids, tries, n_distinct = _first_k_distinct(draws, K, ex)
            if n_distinct >= K:
                return Draw(ids, tries)
            if draws.numel() >= _MAX_UNIQUE_DRAWS:
                where = f"in some row after {draws.shape[1]} draws" if rows else f"in {draws.numel()} draws"
                raise SoftmaxlabError(f"unique {'per-row ' if rows else ''}sampling found only {n_distinct} of {K} "
                                      f"distinct ids {where}; lower num_sampled or set unique=False")
            draws = torch.cat([draws, self._draw(tuple(draws.shape), generator)], -1)

    def expected_count_excluding(
        self, ids: torch.Tensor, K: int, num_tries: torch.Tensor, excluded_mass: torch.Tensor,
        num_excluded: torch.Tensor,
    ) -> torch.Tensor:
        """Q_j of a unique per-row draw (B, K) from q' = q / (1 - excluded_mass_b) after num_tries_b (B,) tries:
        TensorFlow's 1 - (1 - q'_j)^T (float64, shape of ids)."""
        qp = self.probs(ids) / (1.0 - excluded_mass)[:, None]
        return -torch.expm1(num_tries.to(torch.float64)[:, None] * torch.log1p(-qp))

    def expected_count(
        self, ids: torch.Tensor, K: int, unique: bool = False, num_tries: int | None = None,
        convention: str = "inclusion",
    ) -> torch.Tensor:
        """Q_j: expected count of class j in a draw of K ids (float64, shape of ids).

        convention 'inclusion' (softmaxlab's): for unique draws always 1 - (1 - q_j)^T, which never exceeds 1;
        'tf': TensorFlow's ExpectedCountHelper, K q_j when the unique draw took exactly T = K tries."""
        q = self.probs(ids)
        if not unique:
            return K * q
        if num_tries is None:
            raise SoftmaxlabError(
                "expected_count with unique=True needs num_tries (returned by sample(..., unique=True))"
            )
        if convention == "tf":
            return tf_expected_count(q, K, num_tries)
        if convention != "inclusion":
            raise SoftmaxlabError(f"unknown convention {convention!r}; choose 'inclusion' or 'tf'")
        # TensorFlow's approximation of the inclusion probability: P(j in T tries) = 1 - (1 - q_j)^T.
        return -torch.expm1(num_tries * torch.log1p(-q))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_classes={self.num_classes}, device={self.device})"


class UniformSampler(Sampler):
    """q_j = 1 / C."""

    name = "uniform"

    def _draw(self, shape, generator):
        return torch.randint(0, self.num_classes, shape, generator=generator, device=self.device)

    def probs(self, ids):
        return torch.full(ids.shape, 1.0 / self.num_classes, dtype=torch.float64, device=ids.device)

    def expected_count(self, ids, K, unique=False, num_tries=None, convention="inclusion"):
        if unique and convention != "tf":  # a uniform K-subset: P(j in S) = K / C exactly (TF: formula below)
            return torch.full(ids.shape, K / self.num_classes, dtype=torch.float64, device=ids.device)
        return super().expected_count(ids, K, unique, num_tries, convention)

    def expected_count_excluding(self, ids, K, num_tries, excluded_mass, num_excluded):
        # a uniformly random K-subset of the C - n_b classes left: P(j in S_b) = K / (C - n_b) exactly
        Q = K / (self.num_classes - num_excluded.to(torch.float64))
        return Q[:, None].expand(ids.shape).to(ids.device)


class LogUniformSampler(Sampler):
    """Zipf-like q(k) = (log(k + 2) - log(k + 1)) / log(C + 1), TensorFlow's log_uniform_candidate_sampler.

    Sorted classes (id 0 most frequent). Drawn by inverting the CDF F(k) = log(k + 2) / log(C + 1):
    k = floor(exp(u log(C + 1))) - 1, u ~ U[0, 1), in float64, clamped to [0, C - 1] against roundoff.
    """

    name = "loguniform"

    def __init__(self, num_classes: int, device=None):
        super().__init__(num_classes, device)
        self.log_range = math.log1p(num_classes)

    def _draw(self, shape, generator):
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=self.device)
        k = torch.floor(torch.exp(u * self.log_range)).long() - 1
        return k.clamp_(0, self.num_classes - 1)

    def probs(self, ids):
        k = ids.to(torch.float64)
        return torch.log1p(1.0 / (k + 1.0)) / self.log_range


class ProbsSampler(Sampler):
    """An explicit proposal q (C,), drawn in O(1) per id with Walker's alias method."""

    name = "probs"

    def __init__(self, probs, device=None, _validated: bool = False):
        q = torch.as_tensor(probs)
        if q.dim() != 1 or q.numel() < 2 or not q.dtype.is_floating_point:
            raise SoftmaxlabError(
                f"probs must be a 1-D float tensor over >= 2 classes, got shape {tuple(q.shape)} {q.dtype}; "
                "pass one probability per class"
            )
        super().__init__(q.numel(), device or q.device)
        q = q.to(self.device, torch.float64)
        if not _validated:
            check_probs(q, "probs")
        q = q / q.sum()
        self.support = int((q > 0).sum())
        self.q = q
        self.prob_table, self.alias_table = alias_table(q)

    def to(self, device):
        super().to(device)
        self.q = self.q.to(self.device)
        self.prob_table = self.prob_table.to(self.device)
        self.alias_table = self.alias_table.to(self.device)
        return self

    def _draw(self, shape, generator):
        k = torch.randint(0, self.num_classes, shape, generator=generator, device=self.device)
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=self.device)
        return torch.where(u < self.prob_table[k], k, self.alias_table[k])

    def probs(self, ids):
        return self.q.to(ids.device)[ids]


class UnigramSampler(ProbsSampler):
    """q_j proportional to counts_j ** power (word2vec's 0.75 'distortion'); classes with count 0 are never drawn."""

    name = "unigram"

    def __init__(self, counts, power: float = 0.75, device=None):
        c = torch.as_tensor(counts)
        if c.dim() != 1 or c.numel() < 2:
            raise SoftmaxlabError(
                f"counts must be 1-D over >= 2 classes, got shape {tuple(c.shape)}; pass one count per class"
            )
        c = c.to(torch.float64)
        if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
            raise SoftmaxlabError("counts must be finite and non-negative; fix the class counts")
        if not math.isfinite(power) or power < 0:
            raise SoftmaxlabError(f"power must be finite and >= 0, got {power}; use e.g. 0.75 or 1.0")
        w = torch.where(c > 0, c.pow(power), torch.zeros_like(c))  # keep zero counts at zero, also for power 0
        if float(w.sum()) <= 0:
            raise SoftmaxlabError("counts are all zero; pass at least one positive count")
        super().__init__(w / w.sum(), device=device, _validated=True)
        self.power = power


SAMPLERS = ("uniform", "loguniform", "unigram")


def make_sampler(name: str, num_classes: int, counts=None, power: float = 0.75, device=None) -> Sampler:
    """Sampler by name: 'uniform', 'loguniform' (alias 'log_uniform'), 'unigram' (needs counts)."""
    key = str(name).lower().replace("-", "_")
    if key == "uniform":
        return UniformSampler(num_classes, device)
    if key in ("loguniform", "log_uniform"):
        return LogUniformSampler(num_classes, device)
    if key == "unigram":
        if counts is None:
            raise SoftmaxlabError("the unigram sampler needs class counts; pass counts= (e.g. label frequencies)")
        s = UnigramSampler(counts, power=power, device=device)
        if s.num_classes != num_classes:
            raise SoftmaxlabError(
                f"counts cover {s.num_classes} classes but num_classes is {num_classes}; pass one count per class"
            )
        return s
    raise SoftmaxlabError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
