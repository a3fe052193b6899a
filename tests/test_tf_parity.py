"""softmaxlab against TensorFlow itself: stored fixtures always (scripts/make_tf_fixtures.py, TF 2.21), live TF
where it is installed.

640 random loss cases: sampled_softmax_loss (estimator='logq') and nce_loss, remove_accidental_hits on and off,
num_true 1-4, TF's own samplers (log-uniform, uniform, fixed-unigram), unique and with-replacement ids, hits
planted on ids drawn more than once, duplicate true labels, float32 and float64. Per-example losses and the
gradients of their sum wrt inputs, weights and biases.
"""

import importlib.util
import os

import numpy as np
import pytest
import torch

from softmaxlab.sampled import nce_loss, sampled_softmax_loss
from softmaxlab.samplers import LogUniformSampler, ProbsSampler, UniformSampler, tf_expected_count

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_tf_fixtures", os.path.join(HERE, "..", "scripts",
                                                                                   "make_tf_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SCRIPT = _load_script()
CASES = [c for f in ("tf_parity_f32.npz", "tf_parity_f64.npz") for c in SCRIPT.unpack(np.load(os.path.join(FIX, f)))]
SAMPLER_CASES = SCRIPT.unpack(np.load(os.path.join(FIX, "tf_samplers.npz")))
KEYS = ("loss", "d_inputs", "d_weights", "d_biases")


def ours(c, rule):
    """softmaxlab's per-example losses and gradients of their sum, for a fixture case and a hit rule."""
    dtype = torch.float64 if c["inputs"].dtype == np.float64 else torch.float32
    x, W, b = (torch.tensor(c[k], dtype=dtype, requires_grad=True) for k in ("inputs", "weights", "biases"))
    sv = tuple(torch.from_numpy(c[k]) for k in ("sampled", "true_expected_count", "sampled_expected_count"))
    kw = dict(sampled_values=sv, remove_accidental_hits=rule, num_true=int(c["num_true"]), reduction="none")
    if str(c["kind"]) == "nce":
        loss = nce_loss(x, W, b, torch.from_numpy(c["labels"]), None, **kw)
    else:
        loss = sampled_softmax_loss(x, W, b, torch.from_numpy(c["labels"]), None, estimator="logq", **kw)
    loss.sum().backward()
    return dict(zip(KEYS, (loss.detach().numpy(), x.grad.numpy(), W.grad.numpy(), b.grad.numpy())))


def errors(c, rule) -> dict:
    """Per array: max abs error (float64) or max abs error relative to the array's largest entry (float32)."""
    got = ours(c, rule)
    f64 = c["inputs"].dtype == np.float64
    return {k: float(np.abs(got[k] - c[k]).max() / (1.0 if f64 else max(np.abs(c[k]).max(), 1e-30))) for k in KEYS}


def tol(c) -> float:
    return 1e-10 if c["inputs"].dtype == np.float64 else 1e-5


def repeated_hit_rows(c) -> np.ndarray:
    """(B,) bool: the row has a true label that was sampled more than once."""
    ids = c["sampled"]
    return np.array([any((ids == t).sum() > 1 for t in row) for row in c["labels"]])


def test_fixtures_cover_the_cases_users_hit():
    assert len(CASES) >= 500
    assert sum(os.path.getsize(os.path.join(FIX, f)) for f in os.listdir(FIX)) < 1_500_000
    kinds = {(str(c["kind"]), bool(c["remove_accidental_hits"]), c["inputs"].dtype.name) for c in CASES}
    assert len(kinds) == 8  # {softmax, nce} x {hits on, off} x {float32, float64}
    assert {int(c["num_true"]) for c in CASES} == {1, 2, 3, 4}
    assert {bool(c["unique"]) for c in CASES} == {True, False}
    assert {str(c["sampler"]) for c in CASES} == {"log_uniform", "uniform", "fixed_unigram"}
    hits_on = [c for c in CASES if c["remove_accidental_hits"]]
    assert sum(repeated_hit_rows(c).any() for c in hits_on) >= 50  # where TF's rule differs from ours
    assert sum(any(len(set(r)) < len(r) for r in c["labels"]) for c in CASES) >= 50  # duplicate true labels


@pytest.mark.parametrize("kind", ["softmax", "nce"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_tensorflow_with_tfs_hit_rule(kind, dtype):
    """remove_accidental_hits='tf' (and False) gives TF's numbers on every case."""
    cases = [c for c in CASES if str(c["kind"]) == kind and c["inputs"].dtype.name == dtype]
    assert len(cases) >= 100
    bad = []
    for i, c in enumerate(cases):
        e = errors(c, "tf" if c["remove_accidental_hits"] else False)
        if max(e.values()) > tol(c):
            bad.append((i, e))
    assert not bad, bad[:5]


@pytest.mark.parametrize("kind", ["softmax", "nce"])
def test_mask_every_copy_differs_from_tf_exactly_where_a_hit_repeats(kind):
    """remove_accidental_hits=True masks every copy of a hit, TF only the last: the per-example losses differ on
    exactly the rows whose true label was sampled more than once, and agree everywhere else."""
    cases = [c for c in CASES if str(c["kind"]) == kind and c["remove_accidental_hits"]]
    n_differ = 0
    for c in cases:
        got = ours(c, True)["loss"]
        rel = np.abs(got - c["loss"]) / np.maximum(np.abs(c["loss"]), 1.0)
        rows = repeated_hit_rows(c)
        assert (rel[~rows] <= tol(c)).all(), (c["labels"], c["sampled"])
        assert (rel[rows] > 10 * tol(c)).all(), (c["labels"], c["sampled"], rel)
        n_differ += rows.any()
    assert n_differ >= 20


def _our_sampler(c):
    C = int(c["range_max"])
    if str(c["sampler"]) == "log_uniform":
        return LogUniformSampler(C)
    if str(c["sampler"]) == "uniform":
        return UniformSampler(C)
    r = int(c["num_reserved_ids"])
    w = np.concatenate([np.zeros(r), c["unigrams"] ** float(c["distortion"])])
    return ProbsSampler(torch.from_numpy(w / w.sum()), _validated=True)


def test_tf_expected_counts_in_both_branches_match_tensorflows_samplers():
    """TF returns K q when a unique draw took exactly K tries and 1 - (1 - q)^T otherwise. From TF's own draws,
    recover T, then tf_expected_count reproduces TF's counts (float32 precision) for the sampled and true ids;
    softmaxlab's inclusion convention does not where T == K."""
    branches = {"K q": 0, "inclusion": 0}
    for c in SAMPLER_CASES:
        s, K = _our_sampler(c), int(c["num_sampled"])
        ids, Q = torch.from_numpy(c["sampled"]), torch.from_numpy(c["sampled_expected_count"]).double()
        q = s.probs(ids)
        if torch.allclose(Q, K * q, rtol=1e-5, atol=0):  # TF's shortcut: no collisions, T == K
            T = K
        else:
            i = int(torch.argmax(torch.where(Q < 0.9, q, 0)))  # the best-conditioned entry for T
            T = round(float(torch.log1p(-Q[i]) / torch.log1p(-q[i])))
        assert T >= K
        torch.testing.assert_close(tf_expected_count(q, K, T), Q, rtol=1e-5, atol=0)
        Qt = tf_expected_count(s.probs(torch.from_numpy(c["labels"])), K, T)
        torch.testing.assert_close(Qt, torch.from_numpy(c["true_expected_count"]).double(), rtol=1e-5, atol=0)
        branches["K q" if T == K else "inclusion"] += 1
        # where TF took its shortcut, softmaxlab's inclusion form differs (uniform: both are K / C)
        if T == K and float(q.max()) > 1e-3 and str(c["sampler"]) != "uniform":
            assert not torch.allclose(s.expected_count(ids, K, unique=True, num_tries=T), Q, rtol=1e-4)
    assert min(branches.values()) >= 30, branches


def test_live_tensorflow_on_fresh_cases():
    pytest.importorskip(
        "tensorflow", reason="TensorFlow is not installed (pip install tensorflow-cpu, the 'tf' extra); "
        "the stored-fixture parity tests above still ran"
    )
    import tensorflow as tf

    for i in range(10**6, 10**6 + 24):
        c = SCRIPT.loss_case(tf, i, "float64" if i % 2 else "float32")
        e = errors(c, "tf" if c["remove_accidental_hits"] else False)
        assert max(e.values()) <= tol(c), (i, e)
