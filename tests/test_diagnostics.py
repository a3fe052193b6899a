"""Issue 17's training side: the init/data seed split, and --diagnostics (dead ReLUs, gradient norms, loss
windows) recorded without changing a run's numbers. Synthetic data, no MNIST needed."""

import dataclasses
import hashlib
import math

import fakes
import pytest
import torch
import torch.nn.functional as F

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.mnist import records
from softmaxlab.mnist.configs import ReproduceConfig, TrainConfig
from softmaxlab.mnist.diagnostics import DIAG_EVERY, dead_fractions, weight_grad_norm
from softmaxlab.mnist.engine import Engine
from softmaxlab.mnist.models import mlp
from softmaxlab.mnist.train import init_model, shuffle_rng, train

TINY = TrainConfig(model="mlp", layers=2, width=32, epochs=2, batch_size=32, lr=0.05, device="cpu")
DATA = fakes.fake_data(640, 200, 0)  # 20 steps per epoch at batch 32


def numbers(res):
    return ([(h["train_loss"], h["val_loss"], h["val_acc"]) for h in res["history"]], res["test_acc"],
            res["val_acc"], res["test_loss"], res["test_errors"])


def test_run_ids_of_existing_records_are_unchanged():
    """The new fields leave the identity at their defaults: every record made before them keeps its id (the
    golden values were computed with the code before this change), so a study in progress is reused."""
    assert records.run_id(TrainConfig().identity()) == "c742c239135c"
    assert records.run_id(TrainConfig(model="linear", seed=3).identity()) == "b54d14e87404"
    plan = ReproduceConfig(seeds=10, diagnose=False, tune_lrs="none").plan()
    ids = sorted({records.run_id(c.identity()) for q in ("q1", "q2", "q4") for c in plan[q]})
    assert len(ids) == 90 and hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == "9db03ed559a98083"
    assert "diagnostics" in dataclasses.replace(TINY, diagnostics=True).identity()
    assert dataclasses.replace(TINY, init_seed=0).identity() != TINY.identity()  # set is set, even to `seed`


def test_same_init_and_data_seed_is_the_plain_run_bitwise():
    a = train(dataclasses.replace(TINY, seed=3), DATA)
    b = train(dataclasses.replace(TINY, seed=0, init_seed=3, data_seed=3), DATA)
    assert numbers(a) == numbers(b)


def test_split_seeds_take_init_from_one_and_order_from_the_other():
    ab = dataclasses.replace(TINY, init_seed=1, data_seed=2)
    a, b = dataclasses.replace(TINY, seed=1), dataclasses.replace(TINY, seed=2)
    weights = lambda c: init_model(c)[0].state_dict()
    first_order = lambda c: torch.randperm(len(DATA.train.y), generator=shuffle_rng(c))
    assert all(torch.equal(v, weights(a)[k]) for k, v in weights(ab).items())
    assert not torch.equal(weights(ab)["0.weight"], weights(b)["0.weight"])
    assert torch.equal(first_order(ab), first_order(b)) and not torch.equal(first_order(ab), first_order(a))
    got = numbers(train(ab, DATA))
    assert got != numbers(train(a, DATA)) and got != numbers(train(b, DATA))


@pytest.mark.parametrize("field", ["init_seed", "data_seed"])
def test_bad_split_seed_is_a_clear_error(field):
    for bad in (-1, 1.5, True):
        with pytest.raises(SoftmaxlabError, match=field):
            dataclasses.replace(TINY, **{field: bad}).validate()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_diagnostics_do_not_change_the_numbers(precision):
    cfg = dataclasses.replace(TINY, precision=precision)
    plain, diag = train(cfg, DATA), train(dataclasses.replace(cfg, diagnostics=True), DATA)
    assert numbers(diag) == numbers(plain) and "diagnostics" not in plain
    pts = diag["diagnostics"]
    steps = 20  # per epoch: points at steps 50k within an epoch and at its end
    want = [e * steps + s for e in range(2) for s in range(1, steps + 1) if s % DIAG_EVERY == 0 or s == steps]
    assert [p["step"] for p in pts] == want and [p["window"] for p in pts] == [steps] * 2
    assert [p["loss"] for p in pts] == pytest.approx([h["train_loss"] for h in plain["history"]], rel=1e-6)
    assert all(len(p["dead"]) == 2 and len(p["grad_norm"]) == 3 for p in pts)
    assert all(0 <= d <= 1 for p in pts for d in p["dead"]) and all(g > 0 for p in pts for g in p["grad_norm"])


def test_diagnostics_resume_bitwise(tmp_path):
    cfg = dataclasses.replace(TINY, epochs=3, batch_size=8, diagnostics=True)  # 80 steps: a 50-step window
    straight = train(cfg, DATA)
    ck = tmp_path / "ck.pt"
    train(dataclasses.replace(cfg, epochs=1), DATA, checkpoint=ck)
    resumed = train(cfg, DATA, checkpoint=ck)
    assert resumed["diagnostics"] == straight["diagnostics"] and numbers(resumed) == numbers(straight)
    assert [p["window"] for p in straight["diagnostics"][:2]] == [50, 30]


def test_dead_fraction_of_a_hand_made_net():
    """Layer 1: units 0-1 alive, unit 2 dead (bias -10), unit 3 alive on one probe row only; layer 2: unit 0
    reads only the dead unit (dead), unit 1 reads unit 0 (alive)."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    W1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -2.0]])
    b1 = torch.tensor([[0.0, 0.0, -10.0, -1.5]])
    W2 = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    b2 = torch.zeros(1, 2)
    head_W, head_b = torch.ones(3, 2), torch.zeros(1, 3)
    assert dead_fractions([W1, W2, head_W], [b1, b2, head_b], x) == [0.25, 0.5]


def test_grad_norms_match_autograd_float64():
    torch.manual_seed(0)
    net = mlp(3, 7, d_in=784, n_out=10).double()
    xb = torch.randint(0, 256, (13, 784), dtype=torch.uint8)
    yb = torch.randint(0, 10, (13,))
    eng = Engine(net, lr=0.1, bf16=False, normalize=False, device="cpu")
    norms = torch.zeros(eng.n, dtype=torch.float64)
    eng.step(xb, yb, torch.empty((), dtype=torch.float64), norms)
    F.cross_entropy(net(xb.double() / 255), yb).backward()
    want = [m.weight.grad.norm() for m in net if isinstance(m, torch.nn.Linear)]
    assert torch.allclose(norms, torch.stack(want), rtol=1e-12, atol=0)
    g, a = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    assert math.isclose(float(weight_grad_norm(g, a)), float((g.t() @ a).norm()), rel_tol=1e-12)


def test_study_plan_counts():
    """README's counts: --seeds 10 trains 90 protocol runs, 50 diagnostic (3 depths x 10 seeds, then the 5 x 5
    swap grid less its diagonal) and 120 extension runs (8 depths x 3 lrs besides the protocol's x 5 seeds);
    --no-diagnose --tune-lrs none only the protocol's; --quick keeps 2 lrs."""
    def ids(cfg, *parts):
        plan = cfg.resolved().plan()
        return {records.run_id(c.identity()) for q in parts for c in plan.get(q, [])}

    full = ReproduceConfig(seeds=10, tune_lrs="0.01,0.03,0.1,0.3")
    assert ReproduceConfig().lrs() == []  # off by default
    protocol = ids(full, "q1", "q2", "q4")
    assert len(protocol) == 90 and len(ids(full, "diag", "swap")) == 50
    assert len(ids(full, "tune") - protocol) == 120 and ids(full, "tune") & protocol
    off = ReproduceConfig(seeds=10, diagnose=False, tune_lrs="none")
    assert ids(off, *off.resolved().plan()) == protocol
    assert ReproduceConfig(quick=True, tune_lrs="0.01,0.03,0.1").resolved().lrs() == [0.01, 0.03]
    with pytest.raises(SoftmaxlabError, match="tune-lrs"):
        ReproduceConfig(tune_lrs="0.1,fast").resolved()
    assert ReproduceConfig(quick=True, tune_lrs="none").resolved().plan()["tune"] == []


def test_records_made_before_the_new_fields_still_load_and_summarise(tmp_path):
    """A result.json whose config lacks init_seed, data_seed and diagnostics (the running 10-seed study's) reads
    as a plain protocol run: Run, results.csv, summarize, the lr extension."""
    from softmaxlab.mnist.configs import NEW_FIELDS
    from softmaxlab.mnist.summary import Run, summarize, tuned

    rid = records.run_id(TINY.identity())
    r = records.finish_record(TINY, rid, tmp_path, train(TINY, DATA), 1.0, log=lambda s: None)
    for k in NEW_FIELDS:
        r["config"].pop(k)
    run = Run.of(r)
    assert (run.init_seed, run.data_seed, run.diagnostics, run.lr) == (None, None, False, 0.05)
    header, row = records.results_csv([r]).splitlines()
    assert dict(zip(header.split(","), row.split(",")))["diagnostics"] == "False"
    assert summarize([r])[0].test_acc_mean == r["test_acc"]
    assert tuned([r], [2], [0.05], 0.05)[0].chosen_lr == 0.05
