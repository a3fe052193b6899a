"""Statistics over seeds: the mean with its t interval, and paired tests between architectures.

Seeds are paired by seed number (Q4's verdict, Q2 vs Q1). Seed s of two architectures shares nothing but the
number (each run seeds its own init and shuffle), but pairing by seed is the design fixed in advance. The test
is Wilcoxon's signed-rank test (two-sided, scipy.stats.wilcoxon: exact up to 50 pairs without ties): deep,
narrow nets sometimes stay on the initial plateau, so the differences are far from normal and a t-test's
p-values would lean on a normality they do not have. The effect size is the mean paired difference with its
95% t interval. A family's p-values are adjusted by Holm's step-down method (scipy has none; it is five lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

ALPHA = 0.05


def mean_ci(xs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the `level` t-interval); std and half-width are NaN for one value."""
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = sum(xs) / n
    if n == 1:
        return m, math.nan, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, sd, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


@dataclass(frozen=True)
class PairedTest:
    """`name` minus `baseline`, test accuracy, over the seeds both finished."""

    name: str
    baseline: str
    layers: int  # of `name` (Q4), 0 for the linear classifier
    baseline_layers: int
    seeds: tuple[int, ...]
    diff_mean: float  # fraction: +0.01 is one point better than the baseline
    diff_ci: float  # 95% t half-width; NaN with fewer than 2 pairs
    wins: int  # seeds where `name` beats the baseline (ties count for neither)
    p: float  # Wilcoxon signed-rank, exact, two-sided; NaN with fewer than 2 pairs or all ties
    p_holm: float  # Holm-adjusted over its family; NaN where p is

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA


def min_p(n: int) -> float:
    """The smallest two-sided p-value the exact signed-rank test can give with n pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2 ** n)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment (NaN stays NaN and is left out of the family)."""
    idx = sorted((i for i, p in enumerate(ps) if not math.isnan(p)), key=lambda i: ps[i])
    out, run = [math.nan] * len(ps), 0.0
    for rank, i in enumerate(idx):
        run = max(run, min(1.0, (len(idx) - rank) * ps[i]))  # monotone: never below an earlier adjusted p
        out[i] = run
    return out


def paired(a: dict[int, float], base: dict[int, float]) -> tuple[tuple[int, ...], float, float, int, float]:
    """(seeds, mean diff, 95% CI half-width, wins, p) of a - base over the seeds both have."""
    seeds = tuple(sorted(set(a) & set(base)))
    d = [a[s] - base[s] for s in seeds]
    m, _, ci = mean_ci(d)
    # exact for n <= 50 without ties or zeros
    p = math.nan if len(d) < 2 or all(x == 0 for x in d) else float(stats.wilcoxon(d).pvalue)
    return seeds, m, ci, sum(x > 0 for x in d), p


def paired_family(pairs: list[tuple[str, int, str, int]], acc: dict[str, dict[int, float]]) -> tuple[PairedTest, ...]:
    """One PairedTest per (name, layers, baseline, baseline layers), Holm-adjusted together.

    acc: name -> {seed: test accuracy} of the runs that finished."""
    raw = [(n, L, b, bl, *paired(acc.get(n, {}), acc.get(b, {}))) for n, L, b, bl in pairs]
    adj = holm([r[-1] for r in raw])
    return tuple(PairedTest(n, b, L, bl, seeds, m, ci, wins, p, pa)
                 for (n, L, b, bl, seeds, m, ci, wins, p), pa in zip(raw, adj))

