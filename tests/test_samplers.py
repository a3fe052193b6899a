"""Samplers: frequencies against probs (chi-square, fixed seeds), expected counts against simulation,
unique and per-row-exclusion draws, alias tables, bad input."""

import math

import pytest
import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers import (
    LogUniformSampler,
    ProbsSampler,
    UniformSampler,
    UnigramSampler,
    make_sampler,
)
from softmaxlab.samplers.alias import alias_table as _alias_table

f64 = torch.float64


def chi2_threshold(dof: int, z: float = 4.265) -> float:
    """Upper quantile of chi-square(dof) by Wilson-Hilferty; z = 4.265 is the 1e-5 normal tail."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * math.sqrt(a)) ** 3


def assert_frequencies_match(ids: torch.Tensor, q: torch.Tensor):
    n = ids.numel()
    obs = torch.bincount(ids.flatten(), minlength=q.numel()).to(f64)
    assert obs[q == 0].sum() == 0, "a class with q = 0 was drawn"
    keep = q > 0
    exp = n * q[keep]
    stat = float(((obs[keep] - exp) ** 2 / exp).sum())
    assert stat < chi2_threshold(int(keep.sum()) - 1), f"chi-square {stat:.1f} too large"


def skewed_probs(C=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(C, generator=g, dtype=f64) ** 3
    q[::7] = 0.0
    return q / q.sum()


def all_samplers():
    return [UniformSampler(37), LogUniformSampler(37), ProbsSampler(skewed_probs()),
            UnigramSampler(torch.arange(25.0), power=0.75)]


@pytest.mark.parametrize("sampler", all_samplers(), ids=lambda s: s.name)
def test_frequencies_match_probs(sampler):
    g = torch.Generator().manual_seed(1)
    ids = sampler.sample(200_000, generator=g).ids
    q = sampler.probs(torch.arange(sampler.num_classes))
    assert abs(float(q.sum()) - 1.0) < 1e-12
    assert_frequencies_match(ids, q)


def test_frequencies_detect_a_wrong_distribution():
    # The chi-square check has power: uniform draws do not pass for a log-uniform q.
    g = torch.Generator().manual_seed(2)
    ids = UniformSampler(37).sample(200_000, generator=g).ids
    with pytest.raises(AssertionError):
        assert_frequencies_match(ids, LogUniformSampler(37).probs(torch.arange(37)))


def test_loguniform_is_tensorflows_zipf():
    C = 1000
    s = LogUniformSampler(C)
    k = torch.arange(C)
    expected = (torch.log(k.to(f64) + 2) - torch.log(k.to(f64) + 1)) / math.log(C + 1)
    torch.testing.assert_close(s.probs(k), expected, rtol=1e-11, atol=0)  # ours avoids the cancellation
    # inverse CDF: u -> floor(exp(u log(C + 1))) - 1 puts u in [log(k+1), log(k+2)) / log(C+1) on class k
    u = torch.tensor([0.0, math.log(2) / math.log(C + 1) - 1e-12, math.log(2) / math.log(C + 1) + 1e-12, 1 - 1e-16],
                     dtype=f64)
    k = torch.floor(torch.exp(u * math.log1p(C))).long() - 1
    assert k.clamp(0, C - 1).tolist() == [0, 0, 1, C - 1]


def test_alias_table_reproduces_q_exactly():
    for C, seed in [(2, 0), (7, 1), (1000, 2), (50_000, 3)]:
        q = skewed_probs(C, seed)
        prob, alias = _alias_table(q)
        implied = prob.index_add(0, alias, 1.0 - prob) / C
        torch.testing.assert_close(implied, q, rtol=0, atol=1e-13)
        assert ((prob >= 0) & (prob <= 1)).all()
    prob, alias = _alias_table(torch.full((5,), 0.2, dtype=f64))
    assert (prob == 1).all() and (alias == torch.arange(5)).all()


@pytest.mark.parametrize("sampler", all_samplers()[:3], ids=lambda s: s.name)
def test_expected_count_with_replacement_matches_simulation(sampler):
    g = torch.Generator().manual_seed(3)
    K, n = 9, 40_000
    ids = sampler.sample(K * n, generator=g).ids.view(n, K)
    C = sampler.num_classes
    counts = torch.zeros(n, C, dtype=f64).scatter_add_(1, ids, torch.ones(n, K, dtype=f64))
    mean, se = counts.mean(0), counts.std(0) / math.sqrt(n)
    Q = sampler.expected_count(torch.arange(C), K)
    z = ((mean - Q) / se.clamp_min(1e-12))[Q > 0]
    assert z.abs().max() < 4.5, z


def test_uniform_unique_inclusion_is_exactly_k_over_c():
    s, g = UniformSampler(12), torch.Generator().manual_seed(4)
    K, n = 5, 20_000
    inc = torch.zeros(12, dtype=f64)
    for _ in range(n):
        d = s.sample(K, generator=g, unique=True)
        assert d.ids.unique().numel() == K and d.num_tries >= K
        inc[d.ids] += 1
    inc /= n
    Q = s.expected_count(torch.arange(12), K, unique=True, num_tries=d.num_tries)
    assert torch.allclose(Q, torch.full((12,), K / 12, dtype=f64))
    se = math.sqrt(K / 12 * (1 - K / 12) / n)
    assert (inc - K / 12).abs().max() < 4.5 * se


def test_loguniform_unique_expected_count_is_tensorflows_approximation():
    """1 - (1 - q)^T is TF's approximation of the inclusion probability: close (a few %), not exact."""
    s, g = LogUniformSampler(20), torch.Generator().manual_seed(5)
    K, n = 6, 5000
    inc = torch.zeros(20, dtype=f64)
    approx = torch.zeros(20, dtype=f64)
    for _ in range(n):
        d = s.sample(K, generator=g, unique=True)
        assert d.ids.unique().numel() == K
        inc[d.ids] += 1
        approx += s.expected_count(torch.arange(20), K, unique=True, num_tries=d.num_tries)
    inc, approx = inc / n, approx / n
    assert ((approx - inc).abs() / inc).max() < 0.06
    assert abs(float(inc.sum()) - K) < 1e-9  # inclusion probabilities of a K-set sum to K


def test_unique_is_first_k_distinct_of_the_stream_and_counts_tries():
    """Same generator state: the unique draw equals a Python loop over the with-replacement stream."""
    s = LogUniformSampler(50)
    K = 20
    d = s.sample(K, generator=torch.Generator().manual_seed(6), unique=True)
    stream = s._draw((10_000,), torch.Generator().manual_seed(6)).tolist()
    seen, out, tries = set(), [], 0
    for v in stream:
        tries += 1
        if v not in seen:
            seen.add(v)
            out.append(v)
            if len(out) == K:
                break
    assert d.ids.tolist() == out and d.num_tries == tries
    Q = s.expected_count(d.ids, K, unique=True, num_tries=tries)
    torch.testing.assert_close(Q, 1 - (1 - s.probs(d.ids)) ** tries, rtol=1e-12, atol=0)


def test_per_row_unique_is_first_k_distinct_of_each_rows_q_prime_stream():
    """Same generator state: each row equals a Python loop over that row's stream, excluded ids thrown away,
    tries counting only the kept (q') draws; Q_j = 1 - (1 - q'_j)^T_b."""
    s, K = LogUniformSampler(60), 15
    ex = torch.tensor([[0], [3], [0]])
    d = s.sample(K, generator=torch.Generator().manual_seed(8), exclude=ex, unique=True)
    m0 = math.log1p(-K / 60) / math.log1p(-1 / 60)
    stream = s._draw((3, int(1.25 * m0) + 2 * K + 64), torch.Generator().manual_seed(8))
    for b in range(3):
        seen, out, tries = set(), [], 0
        for v in stream[b].tolist():
            if v == int(ex[b, 0]):
                continue
            tries += 1
            if v not in seen:
                seen.add(v)
                out.append(v)
                if len(out) == K:
                    break
        assert d.ids[b].tolist() == out and int(d.num_tries[b]) == tries
    qy = s.probs(ex)[:, 0]
    Q = s.expected_count_excluding(d.ids, K, d.num_tries, qy, torch.ones(3))
    qp = s.probs(d.ids) / (1 - qy[:, None])
    torch.testing.assert_close(Q, 1 - (1 - qp) ** d.num_tries[:, None].double(), rtol=1e-12, atol=0)


def test_uniform_per_row_unique_inclusion_is_exactly_k_over_remaining():
    s, g = UniformSampler(10), torch.Generator().manual_seed(9)
    ex = torch.tensor([[2, 2], [4, 7]])  # row 0 excludes one class (repeated label), row 1 two
    K, n = 4, 10_000
    inc = torch.zeros(2, 10, dtype=f64)
    for _ in range(n):
        d = s.sample(K, generator=g, exclude=ex, unique=True)
        for b in range(2):
            assert d.ids[b].unique().numel() == K
            inc[b, d.ids[b]] += 1
    inc /= n
    assert inc[0, 2] == 0 and inc[1, 4] == 0 and inc[1, 7] == 0
    Q = s.expected_count_excluding(torch.zeros(2, 3, dtype=torch.long), K, d.num_tries, None, torch.tensor([1, 2]))
    torch.testing.assert_close(Q[:, 0], torch.tensor([K / 9, K / 8], dtype=f64))
    for b, p in ((0, K / 9), (1, K / 8)):
        keep = inc[b] > 0
        assert keep.sum() == 10 - (b + 1)
        assert (inc[b, keep] - p).abs().max() < 4.5 * math.sqrt(p * (1 - p) / n)


def test_unique_needs_more_than_one_chunk_when_q_is_skewed():
    q = torch.full((40,), 1e-4, dtype=f64)
    q[0] = 1 - 39e-4
    d = ProbsSampler(q).sample(39, generator=torch.Generator().manual_seed(7), unique=True)
    assert d.ids.unique().numel() == 39
    assert d.num_tries > 1000


def test_per_row_exclusion():
    s, g = ProbsSampler(skewed_probs(10, 8)), torch.Generator().manual_seed(8)
    q = s.q
    labels = torch.tensor([int(q.argmax()), 3, 3])
    d = s.sample(60_000, generator=g, exclude=labels)
    assert d.ids.shape == (3, 60_000)
    for row, c in zip(d.ids, labels.tolist()):
        assert not (row == c).any()
        qp = q.clone()
        qp[c] = 0
        assert_frequencies_match(row, qp / qp.sum())
    two = s.sample(50, generator=g, exclude=torch.tensor([[1, 2], [4, 4]]))
    assert not (two.ids[0] == 1).any() and not (two.ids[0] == 2).any() and not (two.ids[1] == 4).any()


def test_big_vocabularies_need_no_class_sized_tables():
    g = torch.Generator().manual_seed(9)
    for s in (UniformSampler(10**8), LogUniformSampler(10**8)):
        d = s.sample(4096, generator=g, unique=True)
        assert d.ids.unique().numel() == 4096 and int(d.ids.max()) < 10**8
        assert s.sample(4096, generator=g).ids.shape == (4096,)


def test_generator_makes_draws_reproducible():
    s = LogUniformSampler(1000)
    a = s.sample(100, generator=torch.Generator().manual_seed(10)).ids
    b = s.sample(100, generator=torch.Generator().manual_seed(10)).ids
    assert torch.equal(a, b)


def test_make_sampler():
    assert isinstance(make_sampler("uniform", 5), UniformSampler)
    assert isinstance(make_sampler("log-uniform", 5), LogUniformSampler)
    u = make_sampler("unigram", 3, counts=[1.0, 0.0, 3.0], power=1.0)
    torch.testing.assert_close(u.probs(torch.arange(3)), torch.tensor([0.25, 0.0, 0.75], dtype=f64))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: UniformSampler(5).sample(0), "num_sampled"),
        (lambda: UniformSampler(5).sample(2.5), "num_sampled"),
        (lambda: UniformSampler(5).sample(5, unique=True), "num_sampled < num_classes"),
        (lambda: ProbsSampler([0.5, 0.5, 0.0, 0.0]).sample(3, unique=True), "q > 0"),
        (lambda: UniformSampler(5).sample(4, unique=True, exclude=torch.tensor([[1, 2]])), "besides the"),
        (lambda: UniformSampler(2).sample(2, exclude=torch.tensor([[0, 1]])), "exclude"),
        (lambda: ProbsSampler([0.5, 0.6]), "sum"),
        (lambda: ProbsSampler([1.5, -0.5]), "negative"),
        (lambda: ProbsSampler([float("nan"), 1.0]), "NaN"),
        (lambda: ProbsSampler([[0.5, 0.5]]), "1-D"),
        (lambda: UnigramSampler([0.0, 0.0]), "all zero"),
        (lambda: UnigramSampler([1.0, -1.0]), "non-negative"),
        (lambda: UniformSampler(1), "num_classes"),
        (lambda: make_sampler("zipf", 5), "unknown sampler"),
        (lambda: make_sampler("unigram", 5), "counts"),
        (lambda: make_sampler("unigram", 5, counts=[1.0, 2.0]), "one count per class"),
        (lambda: LogUniformSampler(5).expected_count(torch.arange(2), 2, unique=True), "num_tries"),
        (lambda: ProbsSampler([0.0, 1.0]).sample(3, exclude=torch.tensor([1])), "rejected"),
    ],
)
def test_bad_inputs_raise(make, match):
    with pytest.raises(SoftmaxlabError, match=match):
        make()
