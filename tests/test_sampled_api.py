"""The sampled losses as a user meets them: the module's dense gradients without a (C, d) allocation per step
(every optimizer and zero_grad mode against a plain dense reference), NCELoss, the 'uncorrected' baseline,
checked sampled_values, check_finite, and the zero-mass warning."""

import copy
import warnings

import pytest
import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.sampled import NCELoss, SampledSoftmaxLoss, nce_loss, sampled_softmax_loss
from softmaxlab.samplers import ProbsSampler

C, D, B, K = 50, 6, 8, 10


def batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, D, generator=g, dtype=torch.float64), torch.randint(0, C, (B,), generator=g))
            for _ in range(n)]


def train(head, opt_cls, steps=4, set_to_none=True, accumulate=1, tie=False, clip=None, **opt_kw):
    """A few optimizer steps; the draw of each step is fixed by its seed, so two heads see the same samples."""
    opt = opt_cls(head.parameters(), **opt_kw)
    for i, (x, y) in enumerate(batches(steps * accumulate)):
        loss = head(x, y, generator=torch.Generator().manual_seed(i))
        if accumulate == 1 and i % 2:  # zero_grad between forward and backward, as much user code does
            opt.zero_grad(set_to_none=set_to_none)
        if tie:  # the class table also used as an input embedding: a dense gradient joins the sampled one
            loss = loss + head.weight[y].pow(2).sum() * 0.01 + head.weight.sum() * 1e-3
        loss.backward()
        if (i + 1) % accumulate == 0:
            if clip:
                torch.nn.utils.clip_grad_norm_(head.parameters(), clip)
            opt.step()
            opt.zero_grad(set_to_none=set_to_none)
    return head


def reference(head):
    """The same head, but backward returns a fresh dense (C, d) gradient (the plain path)."""
    ref = copy.deepcopy(head)
    ref.__class__ = type("Dense", (type(head),), {"forward": lambda self, x, y, generator=None: self.loss_fn(
        x, self.weight, self.bias, y, self.num_sampled, generator=generator, **dict(self._kwargs(), sparse=False))})
    return ref


@pytest.mark.parametrize("cls", [SampledSoftmaxLoss, NCELoss])
@pytest.mark.parametrize("opt_cls,kw", [(torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
                                        (torch.optim.Adam, dict(lr=0.01)), (torch.optim.AdamW, dict(lr=0.01))])
@pytest.mark.parametrize("mode", ["set_to_none", "zero", "accumulate", "tied", "clip"])
def test_default_dense_gradients_equal_the_plain_dense_path(cls, opt_cls, kw, mode):
    torch.manual_seed(0)
    head = cls(C, D, K).double()
    ref = reference(head)
    args = dict(set_to_none=mode != "zero", accumulate=2 if mode == "accumulate" else 1, tie=mode == "tied",
                clip=0.05 if mode == "clip" else None)
    train(head, opt_cls, **args, **kw)
    train(ref, opt_cls, **args, **kw)
    torch.testing.assert_close(head.weight, ref.weight, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(head.bias, ref.bias, rtol=1e-12, atol=1e-14)


def test_buffer_is_reused_and_only_touched_rows_are_zeroed():
    head = SampledSoftmaxLoss(C, D, K).double()
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    hows = []
    for x, y in batches(3):
        loss = head(x, y)
        opt.zero_grad()  # between forward and backward, as much user code does
        loss.backward()
        hows.append(head._grads.last["weight"])
        assert head.weight.grad.layout == torch.strided
        opt.step()
    assert hows == ["fresh", "rows", "rows"]
    for x, y in batches(2, seed=3):  # two micro-batches into one .grad, then a reuse: still only rows zeroed
        head(x, y).backward()
    opt.zero_grad()
    head(*batches(1, seed=4)[0]).backward()
    assert head._grads.last["weight"] == "rows"
    opt.zero_grad()
    head(*batches(1)[0]).backward()
    held = head.weight.grad  # a user keeps this step's gradient...
    snapshot = held.clone()
    opt.zero_grad()
    head(*batches(1, seed=5)[0]).backward()
    assert head._grads.last["weight"] == "fresh" and head.weight.grad is not held  # ...so it is not reused
    assert torch.equal(held, snapshot)
    del held, snapshot
    head.weight.grad.add_(1.0)  # someone writes into the buffer: the next reuse zeroes all of it
    opt.zero_grad()
    head(*batches(1, seed=6)[0]).backward()
    assert head._grads.last["weight"] == "full"


def test_sparse_true_gives_sparse_grads_and_autograd_grad_works():
    head = SampledSoftmaxLoss(C, D, K, sparse=True).double()
    x, y = batches(1)[0]
    head(x, y).backward()
    assert head.weight.grad.is_sparse and head.bias.grad.is_sparse
    plain = SampledSoftmaxLoss(C, D, K).double()
    (g,) = torch.autograd.grad(plain(x, y, generator=torch.Generator().manual_seed(0)), plain.weight)
    want = sampled_softmax_loss(x, plain.weight, plain.bias, y, K, generator=torch.Generator().manual_seed(0))
    (w,) = torch.autograd.grad(want, plain.weight)
    torch.testing.assert_close(g.to_dense(), w)


def test_eval_mode_and_pickling_leave_no_buffer():
    head = SampledSoftmaxLoss(C, D, K).double()
    x, y = batches(1)[0]
    head(x, y).backward()
    head.eval()
    full = head(x, y)
    z = head.full_logits(x)
    torch.testing.assert_close(full, torch.nn.functional.cross_entropy(z, y))
    assert head.__getstate__()["_grads"] is None  # the (C, d) buffer is not pickled


@pytest.mark.parametrize("how", ["torch.save", "deepcopy"])
def test_a_saved_or_copied_module_keeps_dense_gradients_of_its_own(how, tmp_path):
    head = SampledSoftmaxLoss(C, D, K).double()
    x, y = batches(1)[0]
    head(x, y).backward()
    if how == "torch.save":
        torch.save(head, tmp_path / "head.pt")
        other = torch.load(tmp_path / "head.pt", weights_only=False)
    else:
        other = copy.deepcopy(head)
    opt = torch.optim.Adam(other.parameters(), lr=0.01)
    for _ in range(2):
        head.zero_grad()
        opt.zero_grad()
        head(x, y).backward()
        other(x, y).backward()
        opt.step()  # Adam: dense gradients, or it raises
    assert other.weight.grad.layout == torch.strided and other.weight.grad is not head.weight.grad
    assert other._grads.state["weight"][0] is other.weight.grad


def test_uncorrected_is_logq_without_the_log_q_shift():
    x, y = batches(1)[0]
    W, b = torch.randn(C, D, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    ids = torch.tensor([3, 7, 7, 11])
    Q = torch.full((4,), 0.3, dtype=torch.float64)
    sv = (ids, torch.full((B, 1), 0.2, dtype=torch.float64), Q)
    got = sampled_softmax_loss(x, W, b, y, None, estimator="uncorrected", sampled_values=sv, reduction="none")
    z = x @ W.T + b
    cand = torch.cat([z.gather(1, y[:, None]), z[:, ids]], 1)
    cand[:, 1:][ids[None, :] == y[:, None]] = -torch.inf
    torch.testing.assert_close(got, torch.logsumexp(cand, 1) - cand[:, 0])


BAD_COUNTS = [0.0, -1.0, float("nan"), float("inf")]


@pytest.mark.parametrize("loss", [sampled_softmax_loss, nce_loss])
@pytest.mark.parametrize("which", ["true_expected_count", "sampled_expected_count"])
@pytest.mark.parametrize("value", BAD_COUNTS)
def test_bad_expected_counts_are_an_error_naming_the_argument(loss, which, value):
    x, y = batches(1)[0]
    W, b = torch.randn(C, D, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    counts = dict(true_expected_count=torch.full((B, 1), 0.5, dtype=torch.float64),
                  sampled_expected_count=torch.full((4,), 0.5, dtype=torch.float64))
    counts[which][0] = value
    sv = (torch.tensor([1, 2, 3, 4]), counts["true_expected_count"], counts["sampled_expected_count"])
    with pytest.raises(SoftmaxlabError, match=f"{which} must be finite and > 0"):
        loss(x, W, b, y, None, sampled_values=sv)


@pytest.mark.parametrize("ids,match", [([0, C], "sampled_candidates must lie in"), ([-1, 2], "must lie in"),
                                       ([[1, 2]], "sampled_candidates must be integer ids")])
def test_bad_sampled_ids_are_an_error(ids, match):
    x, y = batches(1)[0]
    W = torch.randn(C, D, dtype=torch.float64)
    n = torch.tensor(ids).shape[-1]
    sv = (torch.tensor(ids), torch.full((B, 1), 0.5), torch.full(torch.tensor(ids).shape, 0.5))
    with pytest.raises(SoftmaxlabError, match=match):
        sampled_softmax_loss(x, W, None, y, n, sampled_values=sv)


@pytest.mark.parametrize("where", ["inputs", "weight", "bias"])
def test_check_finite_names_the_tensor(where):
    x, y = batches(1)[0]
    t = dict(inputs=x.clone(), weight=torch.randn(C, D, dtype=torch.float64), bias=torch.zeros(C, dtype=torch.float64))
    t[where][y[0] if where != "inputs" else 0] = float("nan")  # a row or entry the loss certainly reads
    assert torch.isnan(sampled_softmax_loss(t["inputs"], t["weight"], t["bias"], y, K))  # default: NaN flows
    with pytest.raises(SoftmaxlabError, match=f"{where} contains NaN or inf"):
        sampled_softmax_loss(t["inputs"], t["weight"], t["bias"], y, K, check_finite=True)


def test_zero_mass_classes_warn_once_under_importance():
    q = torch.full((C,), 1.0 / (C - 5), dtype=torch.float64)
    q[:5] = 0.0
    s = ProbsSampler(q)
    x, y = batches(1)[0]
    W = torch.randn(C, D, dtype=torch.float64)
    with pytest.warns(UserWarning, match="5 of 50 classes have q = 0"):
        sampled_softmax_loss(x, W, None, y, K, sampler=s)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampled_softmax_loss(x, W, None, y, K, sampler=s)  # once
        sampled_softmax_loss(x, W, None, y, K, sampler=ProbsSampler(q), estimator="logq")  # logq: no warning


def test_bad_hit_rule():
    x, y = batches(1)[0]
    with pytest.raises(SoftmaxlabError, match="True, False or 'tf'"):
        sampled_softmax_loss(x, torch.randn(C, D, dtype=torch.float64), None, y, K, remove_accidental_hits="all")


@pytest.mark.parametrize("rule", [True, "tf"])
def test_sorted_hit_positions_equal_the_dense_mask(monkeypatch, rule):
    """Large shared draws on the CPU find hits by sorting (no (B, K) pass): the same entries as the dense mask."""
    from softmaxlab import candidates

    g = torch.Generator().manual_seed(0)
    ids, y = torch.randint(0, 30, (40,), generator=g), torch.randint(0, 30, (16, 3), generator=g)
    dense = candidates.hit_mask(ids, y, rule, dense=True)
    monkeypatch.setattr(candidates, "_DENSE_HITS", 0)
    rows, cols = candidates.hit_mask(ids, y, rule)
    sparse = torch.zeros_like(dense)
    sparse[rows, cols] = True
    assert dense.any() and torch.equal(sparse, dense)


def test_readme_sampled_softmax_snippet_runs():
    """The README's code block for users of the sampled softmax, at a small size."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = text.split("### Sampled softmax in your own code", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    code = code.replace("1_000_000", "1000").replace("4096", "64")
    g = torch.Generator().manual_seed(0)
    ns = dict(hidden=torch.randn(32, 128, generator=g), labels=torch.randint(0, 1000, (32,), generator=g), C=1000)
    ns.update(W=torch.randn(1000, 128, generator=g, requires_grad=True), b=torch.zeros(1000, requires_grad=True))
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["loss"].shape == (32,) and torch.isfinite(ns["loss"]).all()
    assert ns["logits"].shape == (32, 1000)


def test_onednn_gemms_give_the_matmul_path_results(monkeypatch):
    """float32 on the CPU runs its GEMMs on oneDNN: the same loss and gradients as torch's matmul, to fp32
    rounding (summation order differs), for both losses and both draw modes."""
    from softmaxlab import sampled_kernels

    if not sampled_kernels._ONEDNN:
        pytest.skip("oneDNN's linear is not available in this torch build")
    g = torch.Generator().manual_seed(0)
    x, W, b = torch.randn(64, 32, generator=g), torch.randn(500, 32, generator=g), torch.randn(500, generator=g)
    y = torch.randint(0, 500, (64,), generator=g)
    out = {}
    for fast in (True, False):
        monkeypatch.setattr(sampled_kernels, "_ONEDNN", fast)
        res = []
        for fn, kw in ((sampled_softmax_loss, dict(shared=True)), (sampled_softmax_loss, dict(shared=False)),
                       (nce_loss, {})):
            ts = [t.clone().requires_grad_() for t in (x, W, b)]
            loss = fn(*ts, y, 40, generator=torch.Generator().manual_seed(1), **kw)
            loss.backward()
            res += [loss.detach()] + [t.grad for t in ts]
        out[fast] = res
    for a, b_ in zip(out[True], out[False]):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("loss,kw", [(sampled_softmax_loss, {}), (sampled_softmax_loss, dict(shared=False)),
                                     (sampled_softmax_loss, dict(unique=True, sparse=True)),
                                     (sampled_softmax_loss, dict(estimator="as_posed")), (nce_loss, {})])
def test_an_empty_batch_behaves_as_cross_entropy(loss, kw, dtype):
    """B = 0 (a ragged last batch, an empty shard): mean NaN, sum 0, none empty, as F.cross_entropy; backward
    gives zero gradients (it crashed in oneDNN's GEMM for float32, and in a view for per-row draws)."""
    x = torch.randn(0, D, dtype=dtype, requires_grad=True)
    W, b = torch.randn(C, D, dtype=dtype, requires_grad=True), torch.zeros(C, dtype=dtype, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    ref = torch.nn.functional.cross_entropy(torch.zeros(0, C), y)
    for reduction, want in (("mean", ref), ("sum", torch.tensor(0.0)), ("none", torch.zeros(0))):
        got = loss(x, W, b, y, K, reduction=reduction, **kw)
        assert got.shape == want.shape and torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(), want.nan_to_num().to(got.dtype))
        got.sum().backward()
    for p in (W, b):
        assert float(p.grad.to_dense().abs().sum()) == 0
    assert x.grad.shape == x.shape


@pytest.fixture
def one_compile_thread():
    """Inductor without its pool of compile worker processes (tens of seconds to start on 2 cores)."""
    import torch._inductor.config

    with torch._inductor.config.patch(compile_threads=1):
        yield


@pytest.mark.parametrize("loss,kw", [(sampled_softmax_loss, {}), (sampled_softmax_loss, dict(shared=False)),
                                     (nce_loss, {})])
def test_torch_compile_gives_the_eager_results(loss, kw, one_compile_thread):
    """Under torch.compile (float32 on the CPU, where eager runs oneDNN's GEMM, which inductor lowers only for
    frozen weights: compiling failed) the loss and the gradients are eager's."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x, W, b = torch.randn(B, D, generator=g), torch.randn(C, D, generator=g), torch.randn(C, generator=g)
    y = torch.randint(0, C, (B,), generator=g)

    def step(fn):
        params = [t.clone().requires_grad_() for t in (x, W, b)]
        out = fn(*params, y, K, generator=torch.Generator().manual_seed(1), **kw)
        out.backward()
        return [out.detach()] + [p.grad for p in params]

    for got, want in zip(step(torch.compile(loss)), step(loss)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_torch_compile_of_a_model_with_the_module(one_compile_thread):
    """The README's use: a model ending in SampledSoftmaxLoss (dense .grad from its buffer), compiled, trains
    as the eager copy does, step for step."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = torch.nn.ModuleDict(dict(enc=torch.nn.Linear(D, D), head=SampledSoftmaxLoss(C, D, K)))
    compiled = copy.deepcopy(eager)
    forward = lambda m, x, y, g: m["head"](m["enc"](x), y, generator=g)
    for m, fn in ((eager, forward), (compiled, torch.compile(forward))):
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        for i, (x, y) in enumerate(batches(3)):
            opt.zero_grad()
            fn(m, x.float(), y, torch.Generator().manual_seed(i)).backward()
            opt.step()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
