"""The synthetic extreme-classification task (softmaxlab/synthetic.py), the in-batch option of
SampledSoftmaxLoss it uses, and smoke runs of the two sampled-softmax benchmark scripts."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled import SampledSoftmaxLoss, sampled_softmax_loss
from softmaxlab.samplers import UnigramSampler
from softmaxlab.synthetic import ExtremeTaskConfig, make_extreme_task, topk_accuracy, zipf_probs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ExtremeTaskConfig(num_classes=300, dim=8, noise=0.3, n_train=6000, n_test=3000, seed=3)


def test_task_is_deterministic_and_zipfian():
    a, b = make_extreme_task(SMALL), make_extreme_task(SMALL)
    for name in ("prototypes", "x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = make_extreme_task(ExtremeTaskConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not torch.equal(a.y_train, c.y_train)
    assert a.x_train.shape == (6000, 8) and a.y_test.shape == (3000,)
    torch.testing.assert_close(a.prototypes.norm(dim=1), torch.ones(300))
    pi = zipf_probs(300, 1.0)
    torch.testing.assert_close(pi[0] / pi[9], torch.tensor(10.0, dtype=torch.float64))
    freq = a.train_counts() / 6000
    for j in (0, 1, 5):  # empirical frequencies of head classes within 4 standard errors of pi
        se = math.sqrt(pi[j] * (1 - pi[j]) / 6000)
        assert abs(float(freq[j] - pi[j])) < 4 * se
    # the noise around the prototypes has the configured scale
    resid = a.x_train - a.prototypes[a.y_train]
    assert abs(float(resid.std()) - 0.3) < 0.01


def test_bayes_logits_are_the_gaussian_posterior():
    """mu_j.x / s^2 + log pi_j equals log N(x; mu_j, s^2 I) + log pi_j up to a per-row constant (|mu_j| = 1)."""
    task = make_extreme_task(SMALL)
    x = task.x_test[:50].double()
    mu, s2 = task.prototypes.double(), SMALL.noise**2
    log_joint = -((x[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * s2) + task.class_probs.log()
    ours = task.bayes_logits(x)
    # equal up to |mu_j|^2 = 1 in float32 (about 1e-7, divided by 2 sigma^2)
    torch.testing.assert_close(torch.log_softmax(ours, 1), torch.log_softmax(log_joint, 1), rtol=0, atol=1e-5)
    acc = topk_accuracy(task.bayes_logits, task.x_test, task.y_test, chunk=700)
    assert acc[1] > 0.5 and acc[5] >= acc[1]


def test_topk_accuracy_counts_hits_in_chunks():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    y = torch.tensor([1, 3, 0])
    acc = topk_accuracy(lambda x: x, logits, y, ks=(1, 2, 4), chunk=2)
    assert acc == {1: 1 / 3, 2: 2 / 3, 4: 1.0}


def test_bad_task_config_raises():
    with pytest.raises(SoftmaxlabError, match="num_classes"):
        make_extreme_task(ExtremeTaskConfig(num_classes=1))
    with pytest.raises(SoftmaxlabError, match="noise"):
        make_extreme_task(ExtremeTaskConfig(num_classes=10, noise=0.0, n_train=5, n_test=5))


def test_module_in_batch_matches_function_and_trains():
    task = make_extreme_task(SMALL)
    sampler = UnigramSampler(task.train_counts(), power=1.0)
    head = SampledSoftmaxLoss(300, 8, None, sampler=sampler, estimator="logq", in_batch=True)
    x, y = task.x_train[:64], task.y_train[:64]
    expect = sampled_softmax_loss(x, head.weight, head.bias, y, None, sampler=sampler, estimator="logq",
                                  in_batch=True)
    torch.testing.assert_close(head(x, y), expect)
    with pytest.raises(SoftmaxlabError, match="num_sampled=None"):
        SampledSoftmaxLoss(300, 8, 16, in_batch=True)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    head.eval()
    with torch.no_grad():
        before = float(head(task.x_test, task.y_test))
    head.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 6000, (128,), generator=g)
        opt.zero_grad()
        head(task.x_train[idx], task.y_train[idx]).backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        after = float(head(task.x_test, task.y_test))
        torch.testing.assert_close(head(task.x_test, task.y_test),
                                   F.cross_entropy(head.full_logits(task.x_test), task.y_test))
    assert after < 0.7 * before


def _run(script, *args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_quality_script_quick(tmp_path):
    out = tmp_path / "q.json"
    p = _run("sampled_quality.py", "--quick", "--steps", "60", "--json", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    kinds = [(r["kind"], r["sampler"], r["estimator"]) for r in res["runs"]]
    assert kinds[0] == ("full", None, None) and len(kinds) == 8
    chance = 1 / 2000
    for r in res["runs"]:  # 60 steps learn the head classes: far above chance, below the Bayes ceiling + noise
        assert 20 * chance < r["top1"] <= r["top5"] <= 1.0
        assert r["wall_s"] > 0
    assert res["bayes_top1"] > max(r["top1"] for r in res["runs"]) - 0.05
    assert "| full |" in p.stdout and "Bayes-optimal" in p.stdout


def test_benchmark_script_quick(tmp_path):
    out = tmp_path / "b.json"
    p = _run("sampled.py", "--quick", "--no-tf", "--no-compile", "--json", str(out), "--plot", "none")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    methods = {(r["tag"], r["method"]) for r in res["records"]}
    for m in ("full", "adaptive", "naive", "sl_default", "sl_sparse", "sl_logq", "sl_logq_dense", "sl_default_sgd",
              "sl_default_adam"):
        assert ("headline", m) in methods, m
    for r in res["records"]:
        assert r["median_s"] > 0 and len(r["times"]) >= 1
        assert r["step_mb"] is not None and r["state_mb"] > 0
    assert "faster than full" in p.stdout and "| sl_logq |" in p.stdout
