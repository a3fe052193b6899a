"""The fast paths give the plain path's results: hand-written step == autograd, bf16 within tolerance of fp32,
the CUDA-graph step == the sliced step, GPU == CPU (skipped without CUDA).

Correctness only; speed is measured in benchmarks/, never asserted here.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from fakes import fake_data
from torch import nn

from softmaxlab.mnist import train as train_mod
from softmaxlab.mnist.configs import TrainConfig
from softmaxlab.mnist.engine import Engine, bf16_gemm
from softmaxlab.mnist.train import train

DATA = dict(n=640, n_eval=200)
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


@pytest.mark.parametrize("sizes,normalize", [((784, 10), False), ((784, 32, 16, 10), False),
                                             ((784, 24, 10), True)])
def test_step_matches_autograd_float64(sizes, normalize):
    """Forward, loss, backward and the fused SGD update == nn + autograd + optim.SGD."""
    torch.manual_seed(0)
    mods = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    m = nn.Sequential(*mods).double()
    eng = Engine(m, lr=0.1, bf16=False, normalize=normalize, device="cpu")
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for B in (64, 64, 17):  # a full batch twice, then a short last batch
        xb = torch.randint(0, 256, (B, 784), dtype=torch.uint8)
        yb = torch.randint(0, 10, (B,))
        loss = torch.empty((), dtype=torch.float64)
        eng.step(xb, yb, loss)
        x = xb.double().div(255)  # as the engine in the master dtype (float32 in the trainer)
        if normalize:
            x = (x - 0.1307) / 0.3081
        ref = F.cross_entropy(m(x), yb)
        opt.zero_grad()
        ref.backward()
        opt.step()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    got = eng.state_dict(m)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-14)


# ---- bf16 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("emulate", [False, True], ids=["native", "emulated"])
def test_bf16_step_is_the_autocast_step(emulate):
    """The bf16 step == autograd on the same mixed-precision graph: hidden layers as autocast runs them (bf16
    inputs, weights, bias; bf16 GEMMs forward and backward), an fp32 head and loss, fp32 master weights
    updated by SGD. Equal up to bf16 rounding of the bias gradient (the engine sums it in fp32). Both ways
    of computing it: bf16 GEMMs, and their emulation by fp32 GEMMs on bf16-rounded values (CPUs without
    bf16 units)."""
    torch.manual_seed(0)
    sizes = (784, 48, 32, 10)
    m = nn.Sequential(nn.Linear(784, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
    eng = Engine(m, lr=0.1, bf16=True, normalize=False, device="cpu", emulate_bf16=emulate)
    assert eng.emulate == emulate
    ps = [p.detach().clone().requires_grad_() for p in m.parameters()]
    for B in (64, 64, 17):
        xb = torch.randint(0, 256, (B, 784), dtype=torch.uint8)
        yb = torch.randint(0, 10, (B,))
        loss = torch.empty(())
        eng.step(xb, yb, loss)
        h = xb.float().div(255)
        for l in range(len(sizes) - 1):
            W, b = ps[2 * l], ps[2 * l + 1]
            if l < len(sizes) - 2:
                h = F.linear(h.bfloat16(), W.bfloat16(), b.bfloat16()).relu()
            else:
                h = F.linear(h.float(), W, b)
        ref = F.cross_entropy(h, yb)
        grads = torch.autograd.grad(ref, ps)
        with torch.no_grad():
            for p, g in zip(ps, grads):
                p -= 0.1 * g
        assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    got = eng.state_dict(m)
    for (k, _), p in zip(m.state_dict().items(), ps):
        # updates are lr x O(0.1) per step, rounded to bf16 (8 bits): a wrong transpose or a missed ReLU
        # mask would be off by the update itself
        torch.testing.assert_close(got[k], p.detach(), rtol=0, atol=2e-4)
    assert any(not torch.equal(got[k], v) for k, v in m.state_dict().items())  # it did train


def test_bf16_emulation_is_bf16():
    """Emulated bf16 (fp32 GEMMs on bf16 values, fp32 storage) == bf16 GEMMs, step after step: losses and
    master weights agree to float rounding of the sums, and the compute copies hold bf16 values only. A missed
    rounding anywhere (pixels, an output, the weight copy, the gradient) leaves fp32 bits and fails this."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 10))
    nat = Engine(m, lr=0.1, bf16=True, normalize=False, device="cpu", emulate_bf16=False)
    emu = Engine(m, lr=0.1, bf16=True, normalize=False, device="cpu", emulate_bf16=True)
    fp32 = Engine(m, lr=0.1, bf16=False, normalize=False, device="cpu")
    assert emu.emulate and not nat.emulate and all(w.dtype == torch.float32 for w in emu.Wc)
    for B in (64,) * 6 + (17,):
        xb = torch.randint(0, 256, (B, 784), dtype=torch.uint8)
        yb = torch.randint(0, 10, (B,))
        ln, le, lf = torch.empty(()), torch.empty(()), torch.empty(())
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
    data = fake_data(**DATA)
    a = train(TINY, data)
    b = train(dataclasses.replace(TINY, precision="bf16"), data)
    assert b["status"] == "ok" and abs(a["test_acc"] - b["test_acc"]) <= 0.02
    assert b["bf16_gemm"] == bf16_gemm("cpu") and "bf16_gemm" not in a  # how it ran, on record
    assert b["history"][-1]["train_loss"] == pytest.approx(a["history"][-1]["train_loss"], rel=0.1)


@pytest.fixture(scope="module")
def mnist_data(mnist_dir):
    from softmaxlab.mnist.study import load_data

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


def test_indexed_step_equals_sliced_step(monkeypatch):
    """The step CUDA captures (batch found from a device counter, losses written by index) run eagerly on the
    CPU gives the sliced loop's bits."""
    data = fake_data(n=650, n_eval=200)  # 650 = 20 x 32 + 10: a short last batch
    plain = train(TINY, data)
    monkeypatch.setattr(train_mod, "_use_graph", lambda dev, cfg: True)
    indexed = train(TINY, data)
    assert metrics(indexed) == metrics(plain)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_matches_cpu(precision):
    data = fake_data(**DATA)
    cfg = dataclasses.replace(TINY, precision=precision)
    cpu = train(cfg, data)
    gpu = train(dataclasses.replace(cfg, device="cuda"), data)
    assert gpu["device"].startswith("cuda") and gpu["cuda_graph"], gpu.get("cuda_graph_error")
    tol = dict(rel=1e-3, acc=0.01) if precision == "fp32" else dict(rel=0.05, acc=0.02)
    assert_close_metrics(gpu, cpu, **tol)
    eager = train(dataclasses.replace(cfg, device="cuda", cuda_graph=False), data)
    assert not eager["cuda_graph"]
    assert_close_metrics(eager, gpu, **tol)
