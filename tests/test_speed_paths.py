"""The fast paths give the plain path's results: hand-written step == autograd, batched seeds == sequential
runs, bf16 within tolerance of fp32, the CUDA-graph step == the sliced step, GPU == CPU (skipped without CUDA).

Correctness only; speed is measured in benchmarks/, never asserted here.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softmaxlab import train as train_mod
from softmaxlab.batched import groups, train_batched
from softmaxlab.train import Data, Engine, Split, TrainConfig, train


def fake_data(n=640, seed=0) -> Data:
    """Separable-ish digits: class c lights up a block of pixels, plus noise."""
    g = torch.Generator().manual_seed(seed)

    def split(m):
        y = torch.randint(0, 10, (m,), generator=g)
        x = torch.randint(0, 60, (m, 784), generator=g, dtype=torch.int64)
        for c in range(10):
            x[y == c, c * 70:(c + 1) * 70] += 180
        return Split(x.clamp(0, 255).to(torch.uint8), y)

    return Data(split(n), split(200), split(200))


TINY = TrainConfig(model="mlp", layers=2, width=32, epochs=3, batch_size=32, lr=0.05, device="cpu")


def metrics(res):
    return [(h["train_loss"], h["val_loss"], h["val_acc"]) for h in res["history"]], res["test_acc"]


def assert_close_metrics(a, b, rel=1e-3, acc=0.01):
    """Same run up to float rounding: losses within `rel` relative, accuracies within `acc` absolute."""
    assert a["status"] == b["status"] == "ok"
    assert len(a["history"]) == len(b["history"])
    for ha, hb in zip(a["history"], b["history"]):
        for k in ("train_loss", "val_loss"):
            assert ha[k] == pytest.approx(hb[k], rel=rel), (k, ha, hb)
        assert abs(ha["val_acc"] - hb["val_acc"]) <= acc, (ha, hb)
    assert abs(a["test_acc"] - b["test_acc"]) <= acc
    assert a["test_loss"] == pytest.approx(b["test_loss"], rel=rel)


# ---- the hand-written step against autograd -----------------------------------------------------------------


@pytest.mark.parametrize("S", [1, 3])
@pytest.mark.parametrize("sizes,normalize", [((784, 10), False), ((784, 32, 16, 10), False),
                                             ((784, 24, 10), True)])
def test_step_matches_autograd_float64(S, sizes, normalize):
    """Forward, loss, backward and the fused SGD update of S stacked models == nn + autograd + optim.SGD."""
    torch.manual_seed(0)
    models = []
    for _ in range(S):
        mods = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        models.append(nn.Sequential(*mods).double())
    eng = Engine(models, lr=0.1, bf16=False, normalize=normalize, device="cpu")
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    for B in (64, 64, 17):  # a full batch twice, then a short last batch
        xb = torch.randint(0, 256, (S, B, 784), dtype=torch.uint8)
        yb = torch.randint(0, 10, (S, B))
        loss = torch.empty(S, dtype=torch.float64)
        eng.step(xb, yb, loss)
        for i, (m, opt) in enumerate(zip(models, opts)):
            x = xb[i].double().div(255)  # as the engine in the master dtype (float32 in the trainer)
            if normalize:
                x = (x - 0.1307) / 0.3081
            ref = F.cross_entropy(m(x), yb[i])
            opt.zero_grad()
            ref.backward()
            opt.step()
            assert loss[i].item() == pytest.approx(ref.item(), rel=1e-12)
    for i, m in enumerate(models):
        got = eng.state_dict(i, m)
        for k, v in m.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=0, atol=1e-14)


# ---- batched seeds == sequential runs -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_batched_seeds_match_sequential_runs(model):
    data = fake_data()
    cfgs = [dataclasses.replace(TINY, model=model, seed=s) for s in (0, 1, 2)]
    together = train_batched(cfgs, data)
    for cfg, got in zip(cfgs, together):
        alone = train(cfg, data)
        assert got["trained_with"] == 3 and alone["trained_with"] == 1
        assert got["params"] == alone["params"] and got["width"] == alone["width"]
        assert_close_metrics(got, alone)
    assert metrics(together[0]) != metrics(together[1])  # each seed is its own run
    again = train_batched(cfgs, data)
    assert [metrics(r) for r in again] == [metrics(r) for r in together]  # a group is deterministic


def test_batched_checkpoints_resume_bitwise_and_are_trains(tmp_path):
    """A group killed after epoch 1 and resumed == the group straight through, bit for bit; and each run's
    checkpoint is train()'s format (train() resumes it, to tolerance)."""
    data = fake_data()
    cfgs = [dataclasses.replace(TINY, seed=s) for s in (0, 1)]
    straight = train_batched(cfgs, data)
    cks = [tmp_path / f"ck{s}.pt" for s in (0, 1)]
    first = train_batched([dataclasses.replace(c, epochs=1) for c in cfgs], data, checkpoints=cks)
    assert [r["epochs_done"] for r in first] == [1, 1]
    resumed = train_batched(cfgs, data, checkpoints=cks)
    assert [metrics(r) for r in resumed] == [metrics(r) for r in straight]

    ck = tmp_path / "alone.pt"
    train_batched([dataclasses.replace(c, epochs=1) for c in cfgs], data, checkpoints=[ck, None])
    alone = train(cfgs[0], data, checkpoint=ck)
    assert_close_metrics(alone, straight[0])


def test_batched_divergence_is_per_run():
    """One seed of a group blowing up leaves the others' results as if trained alone."""
    data = fake_data()
    ok = dataclasses.replace(TINY, seed=0)
    res = train_batched([ok, dataclasses.replace(ok, seed=1)], data)
    assert all(r["status"] == "ok" for r in res)
    blown = train_batched([dataclasses.replace(ok, lr=1e20, seed=s) for s in (0, 1)], data)
    assert [r["status"] for r in blown] == ["diverged", "diverged"]
    assert all(r["diverged_at"] == {"epoch": 1, "step": 2} and r["history"] == [] for r in blown)


def test_grouping_and_mismatched_groups_refused():
    cfgs = [dataclasses.replace(TINY, seed=s, layers=L) for L in (1, 2) for s in (0, 1, 2)]
    cfgs.append(dataclasses.replace(TINY, model="linear"))
    got = groups(cfgs, max_size=2)
    assert [[(c.layers, c.seed) for c in g] for g in got] == [[(1, 0), (1, 1)], [(2, 0), (2, 1)]]
    from softmaxlab.errors import SoftmaxlabError

    with pytest.raises(SoftmaxlabError, match="differ only in seed.*lr"):
        train_batched([TINY, dataclasses.replace(TINY, seed=1, lr=0.1)], fake_data())


def test_execute_batches_seeds_and_resumes(tmp_path):
    """study.execute trains same-architecture runs together, with every run's own records; a kill mid-group
    leaves checkpoints that the next execute resumes together, to the same bits."""
    from softmaxlab import runs
    from softmaxlab.study import execute

    data = fake_data()
    plan = [dataclasses.replace(TINY, seed=s, epochs=2) for s in (0, 1)] + [dataclasses.replace(TINY, epochs=2,
                                                                                                  model="linear")]
    ref = execute(plan, tmp_path / "ref", data, progress=False, log=lambda s: None, batch_seeds=True)
    assert [r["trained_with"] for r in ref] == [2, 2, 1]
    for r in ref:
        d = tmp_path / "ref" / "runs" / r["run_id"]
        assert (d / "result.json").exists() and (d / "checkpoint.pt").exists()
        assert len((d / "metrics.jsonl").read_text().splitlines()) == 2

    calls = []

    def kill_after_first_epoch(rid, rec):
        calls.append(rid)
        if len(calls) == 2:  # both runs of the group finished epoch 1
            raise KeyboardInterrupt

    class Tracker:
        def start_run(self, *a):
            pass

        def log_epoch(self, rid, rec):
            kill_after_first_epoch(rid, rec)

        def end_run(self, *a):
            pass

    with pytest.raises(KeyboardInterrupt):
        execute(plan, tmp_path / "cut", data, progress=False, log=lambda s: None, tracker=Tracker(),
                batch_seeds=True)
    assert not list((tmp_path / "cut" / "runs").glob("*/result.json"))
    again = execute(plan, tmp_path / "cut", data, progress=False, log=lambda s: None, batch_seeds=True)
    assert [metrics(r) for r in again] == [metrics(r) for r in ref]
    assert [r["run_id"] for r in again] == [runs.run_id(c.identity()) for c in plan]


# ---- bf16 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("emulate", [False, True], ids=["native", "emulated"])
@pytest.mark.parametrize("S", [1, 2])
def test_bf16_step_is_the_autocast_step(S, emulate):
    """The bf16 step == autograd on the same mixed-precision graph: hidden layers as autocast runs them (bf16
    inputs, weights, bias; bf16 GEMMs forward and backward), an fp32 head and loss, fp32 master weights
    updated by SGD. Equal up to bf16 rounding of the bias gradient (the engine sums it in fp32). Both ways
    of computing it: bf16 GEMMs, and their emulation by fp32 GEMMs on bf16-rounded values (CPUs without
    bf16 units)."""
    torch.manual_seed(0)
    sizes = (784, 48, 32, 10)
    models = [nn.Sequential(nn.Linear(784, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
              for _ in range(S)]
    eng = Engine(models, lr=0.1, bf16=True, normalize=False, device="cpu", emulate_bf16=emulate)
    assert eng.emulate == emulate
    masters = [[p.detach().clone().requires_grad_() for p in m.parameters()] for m in models]
    for B in (64, 64, 17):
        xb = torch.randint(0, 256, (S, B, 784), dtype=torch.uint8)
        yb = torch.randint(0, 10, (S, B))
        loss = torch.empty(S)
        eng.step(xb, yb, loss)
        for i, ps in enumerate(masters):
            h = xb[i].float().div(255)
            for l in range(len(sizes) - 1):
                W, b = ps[2 * l], ps[2 * l + 1]
                if l < len(sizes) - 2:
                    h = F.linear(h.bfloat16(), W.bfloat16(), b.bfloat16()).relu()
                else:
                    h = F.linear(h.float(), W, b)
            ref = F.cross_entropy(h, yb[i])
            grads = torch.autograd.grad(ref, ps)
            with torch.no_grad():
                for p, g in zip(ps, grads):
                    p -= 0.1 * g
            assert loss[i].item() == pytest.approx(ref.item(), rel=1e-6)
    for i, (m, ps) in enumerate(zip(models, masters)):
        got = eng.state_dict(i, m)
        for (k, _), p in zip(m.state_dict().items(), ps):
            # updates are lr x O(0.1) per step, rounded to bf16 (8 bits): a wrong transpose or a missed ReLU
            # mask would be off by the update itself
            torch.testing.assert_close(got[k], p.detach(), rtol=0, atol=2e-4)
        assert any(not torch.equal(got[k], v) for k, v in m.state_dict().items())  # it did train


@pytest.mark.parametrize("S", [1, 3])
def test_bf16_emulation_is_bf16(S):
    """Emulated bf16 (fp32 GEMMs on bf16 values, fp32 storage) == bf16 GEMMs, step after step: losses and
    master weights agree to float rounding of the sums, and the compute copies hold bf16 values only. A missed
    rounding anywhere (pixels, an output, the weight copy, the gradient) leaves fp32 bits and fails this."""
    torch.manual_seed(1)
    models = [nn.Sequential(nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 10))
              for _ in range(S)]
    nat = Engine(models, lr=0.1, bf16=True, normalize=False, device="cpu", emulate_bf16=False)
    emu = Engine(models, lr=0.1, bf16=True, normalize=False, device="cpu", emulate_bf16=True)
    fp32 = Engine(models, lr=0.1, bf16=False, normalize=False, device="cpu")
    assert emu.emulate and not nat.emulate and all(w.dtype == torch.float32 for w in emu.Wc)
    for B in (64,) * 6 + (17,):
        xb = torch.randint(0, 256, (S, B, 784), dtype=torch.uint8)
        yb = torch.randint(0, 10, (S, B))
        ln, le, lf = torch.empty(S), torch.empty(S), torch.empty(S)
        nat.step(xb, yb, ln)
        emu.step(xb, yb, le)
        fp32.step(xb, yb, lf)
        torch.testing.assert_close(le, ln, rtol=1e-5, atol=0)
        bufs = emu._buffers(B)
        # the compute copies; the hidden layers' outputs, input gradients and weight gradients; the pixels and
        # the head's gradient where they enter the bf16 layers
        for t in [*emu.Wc[:-1], *emu.bc[:-1], *bufs["a"][:-1], *bufs["da"][1:-1], *bufs["dW"][:-1],
                  bufs["lo"][0], bufs["g"][-2]]:
            assert torch.equal(t, t.bfloat16().float())  # bf16 values, in fp32 storage
    for l in range(3):
        torch.testing.assert_close(emu.W[l], nat.W[l], rtol=0, atol=2e-5)
        torch.testing.assert_close(emu.b[l], nat.b[l], rtol=0, atol=2e-5)
        # and bf16 is not fp32: the rounding is really there (the gap is ~100x the emulation's)
        assert (emu.W[l] - fp32.W[l]).abs().max() > 10 * (emu.W[l] - nat.W[l]).abs().max()


def test_bf16_close_to_fp32_on_fake_data():
    data = fake_data()
    a = train(TINY, data)
    b = train(dataclasses.replace(TINY, precision="bf16"), data)
    assert b["status"] == "ok" and abs(a["test_acc"] - b["test_acc"]) <= 0.02
    assert b["bf16_gemm"] == train_mod.bf16_gemm("cpu") and "bf16_gemm" not in a  # how it ran, on record
    assert b["history"][-1]["train_loss"] == pytest.approx(a["history"][-1]["train_loss"], rel=0.1)
    bb = train_batched([dataclasses.replace(TINY, precision="bf16", seed=s) for s in (0, 1)], data)
    assert_close_metrics(bb[0], b, rel=0.05, acc=0.02)


@pytest.fixture(scope="module")
def mnist_data(mnist_dir):
    from softmaxlab.study import load_data

    return load_data(mnist_dir)


def test_bf16_within_a_point_of_fp32_on_mnist(mnist_data):
    """784-1024-10 on 10,000 MNIST images for 2 epochs: bf16 test accuracy within 1 pp of fp32 (the benchmark
    checks the full protocol against 0.5 pp)."""
    cfg = TrainConfig(model="mlp", layers=1, epochs=2, train_subset=10_000, eval_subset=5_000, device="cpu")
    a = train(cfg, mnist_data)
    b = train(dataclasses.replace(cfg, precision="bf16"), mnist_data)
    assert a["test_acc"] > 0.75  # it learned
    assert abs(a["test_acc"] - b["test_acc"]) <= 0.01, (a["test_acc"], b["test_acc"])


# ---- the CUDA-graph step, and the GPU ---------------------------------------------------------------------------


@pytest.mark.parametrize("S", [1, 2])
def test_indexed_step_equals_sliced_step(monkeypatch, S):
    """The step CUDA captures (batch found from a device counter, losses written by index) run eagerly on the
    CPU gives the sliced loop's bits."""
    data = fake_data(n=650)  # 650 = 20 x 32 + 10: a short last batch
    cfgs = [dataclasses.replace(TINY, seed=s) for s in range(S)]
    plain = train_batched(cfgs, data)
    monkeypatch.setattr(train_mod, "_use_graph", lambda dev, cfg: True)
    indexed = train_batched(cfgs, data)
    assert [metrics(r) for r in indexed] == [metrics(r) for r in plain]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_matches_cpu(precision):
    data = fake_data()
    cfg = dataclasses.replace(TINY, precision=precision)
    cpu = train(cfg, data)
    gpu = train(dataclasses.replace(cfg, device="cuda"), data)
    assert gpu["device"].startswith("cuda") and gpu["cuda_graph"], gpu.get("cuda_graph_error")
    tol = dict(rel=1e-3, acc=0.01) if precision == "fp32" else dict(rel=0.05, acc=0.02)
    assert_close_metrics(gpu, cpu, **tol)
    eager = train(dataclasses.replace(cfg, device="cuda", cuda_graph=False), data)
    assert not eager["cuda_graph"]
    assert_close_metrics(eager, gpu, **tol)
    seeds = train_batched([dataclasses.replace(cfg, device="cuda", seed=s) for s in (0, 1)], data)
    assert_close_metrics(seeds[0], gpu, **tol)
