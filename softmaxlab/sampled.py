"""Sampled softmax and NCE: -log softmax(z)_c estimated from K sampled classes, forward and backward by hand.

Notation (docs/derivations.md, sections 2-6): z_j = w_j . x + b_j; the T true labels y_1..y_T of a row (target
weight 1/T each); S = (s_1..s_K) the sampled ids; Q_j the expected count of class j in S (samplers/); q_j the
proposal. Every softmax estimator is a cross-entropy over the candidates [y, s] with additive log-weights:

    loss = logsumexp([z_y + alpha, z_s + beta]) - mean_t (z_{y_t} + gamma_t)

    estimator     alpha (true)     beta (sampled, masked on hits)   gamma    D = sum exp(candidates)
    importance    0                -log Q_s                         0        e^{z_c} + sum e^{z_j}/Q_j (E[D] = Z)
    as_posed      0                log(q_s / K)                     0        the assignment's, biased
    logq          -log Q_y         -log Q_s                         alpha    tf.nn.sampled_softmax_loss
    uncorrected   0                0                                0        logq without -log Q (a baseline)

nce_loss is tf.nn.nce_loss: sigmoid cross-entropy on the same -log Q shifted candidates (labels 1/T and 0).

Masked candidates get finfo(float32).min, TensorFlow's -FLT_MAX; the log-sum-exp runs in float32 (float64 for
float64 inputs). Accidental hits (remove_accidental_hits): True masks every copy of a sampled id that is a
true label of the row; "tf" masks only its last copy, as TF's compute_accidental_hits does (they differ
only when a hit is sampled more than once); False masks none.

Draw modes: shared=True, one draw for the batch (TF's; hits masked); shared=False, K ids per row from q with
the row's true classes excluded (q'_j = q_j / (1 - q(y_b)), no hits); in_batch=True, the other labels of the
batch are the negatives (Yi et al. 2019). unique=True draws K distinct ids by TF's algorithm.

TensorFlow parity: tf_compat=True (with estimator='logq', shared draws) uses TF's expected counts for unique
draws (K q when the draw took exactly K tries; softmaxlab's own convention is always the inclusion form
1 - (1 - q)^T, which cannot exceed 1) and TF's hit rule. With sampled_values from TF, pass
remove_accidental_hits="tf" where sampled ids may repeat.
"""

from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from softmaxlab.candidates import (
    ESTIMATORS,
    REDUCTIONS,
    SampledValues,
    check_finite,
    check_options,
    check_sampled_values,
    draw_sampled_values,
    hit_mask,
    log_weights,
    prepare,
    resolve_sampler,
)
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.metrics import exact_metrics
from softmaxlab.mixed import FrequencyEstimator, mixed_sampled_values
from softmaxlab.sampled_kernels import CandidateLogits, SampledSoftmaxXent, mask_
from softmaxlab.sampled_reference import nce_grads, reference_weights, sampled_softmax_grads
from softmaxlab.samplers import LogUniformSampler, Sampler, make_sampler

__all__ = [
    "ESTIMATORS", "REDUCTIONS", "FrequencyEstimator", "NCELoss", "SampledSoftmaxLoss", "SampledSoftmaxXent",
    "SampledValues", "draw_sampled_values", "mixed_sampled_values", "nce_grads", "nce_loss", "reference_weights",
    "sampled_softmax_grads", "sampled_softmax_loss",
]


def _num_sampled(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SoftmaxlabError(f"num_sampled must be an integer >= 1, got {k!r}")
    return k


def _samples(inputs, weight, bias, labels, num_sampled, sampler, estimator, remove_accidental_hits, reduction,
             sampled_values, generator, num_true, shared, unique, in_batch, tf_compat, finite):
    """Shared front of both losses: options checked, then labels (B, T), the SampledValues of this step, the hit
    rule (TF's with tf_compat) and the compute dtype (float64 for float64 inputs, else float32)."""
    check_options(estimator, reduction, remove_accidental_hits)
    if tf_compat and estimator != "logq":
        raise SoftmaxlabError("tf_compat=True reproduces tf.nn.sampled_softmax_loss, which is estimator='logq'; "
                              "pass estimator='logq'")
    y = prepare(inputs, weight, bias, labels, num_true)
    if finite:
        check_finite("inputs weight bias", inputs, weight, bias)
    B, C = y.shape[0], weight.shape[0]
    if tf_compat and (in_batch or not shared):
        raise SoftmaxlabError("tf_compat=True reproduces TensorFlow, whose draws are shared by the batch; "
                              "pass shared=True, in_batch=False")
    if in_batch and (sampled_values is not None or num_sampled is not None):
        raise SoftmaxlabError(
            "in_batch uses the other labels of the batch as negatives; pass num_sampled=None and no sampled_values"
        )
    if sampled_values is not None:
        sv = check_sampled_values(sampled_values, B, num_true, C, inputs.device)
        if num_sampled is not None and num_sampled != sv.sampled_candidates.shape[-1]:
            raise SoftmaxlabError(
                f"num_sampled={num_sampled} but sampled_values hold {sv.sampled_candidates.shape[-1]} ids; "
                "pass num_sampled=None"
            )
    else:
        sv = draw_sampled_values(
            y, None if in_batch else _num_sampled(num_sampled), resolve_sampler(sampler, C, inputs.device, estimator),
            shared=shared, unique=unique, generator=generator, in_batch=in_batch, tf_counts=tf_compat,
        )
    rule = "tf" if tf_compat and remove_accidental_hits is True else remove_accidental_hits
    return y, sv, rule, torch.float64 if inputs.dtype == torch.float64 else torch.float32


def sampled_softmax_loss(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    num_sampled: int | None,
    sampler: Sampler | str | None = None,
    estimator: str = "importance",
    remove_accidental_hits: bool | str = True,
    sampled_values=None,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
    num_true: int = 1,
    shared: bool = True,
    unique: bool = False,
    in_batch: bool = False,
    sparse: bool = False,
    tf_compat: bool = False,
    check_finite: bool = False,
) -> torch.Tensor:
    """Sampled softmax cross-entropy of logits inputs @ weight.T + bias, with a hand-written backward.

    inputs (B, d); weight (C, d); bias (C,) or None; labels (B,) or (B, num_true).
    num_sampled: K (None with sampled_values or in_batch). sampler: proposal q (default LogUniformSampler(C)).
    estimator: 'importance' (unbiased D), 'as_posed' (the assignment's D), 'logq' (tf.nn.sampled_softmax_loss),
    'uncorrected' (logq without -log Q: a labelled baseline, biased towards frequent classes; do not train with it).
    remove_accidental_hits: True (every copy), 'tf' (the last copy, TF's rule) or False.
    sampled_values: (ids, true_expected_count, sampled_expected_count) fixes the samples, as in TensorFlow; the
    counts must be finite and > 0. tf_compat: TF's expected counts and hit rule (module docstring).
    sparse: sparse COO gradients for weight and bias (torch.optim.SGD, SparseAdam); dense otherwise (a fresh
    (C, d) tensor per call: SampledSoftmaxLoss avoids that). check_finite: NaN or inf in inputs, weight or bias
    is an error (one host sync) instead of a NaN loss. Returns the loss reduced by `reduction` ('none': (B,)),
    in float32 for 16-bit inputs (float64 for float64).
    """
    y, sv, rule, cd = _samples(inputs, weight, bias, labels, num_sampled, sampler, estimator, remove_accidental_hits,
                               reduction, sampled_values, generator, num_true, shared, unique, in_batch, tf_compat,
                               check_finite)
    ids, alpha, beta, mask, gamma = log_weights(estimator, y, sv, rule, in_batch, cd)
    return SampledSoftmaxXent.apply(inputs, weight, bias, y, ids, alpha, beta, mask, gamma, reduction, sparse)


def nce_loss(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor,
             num_sampled: int | None, sampler: Sampler | str | None = None,
             remove_accidental_hits: bool | str = False, sampled_values=None, reduction: str = "mean",
             generator: torch.Generator | None = None, num_true: int = 1, unique: bool = False,
             sparse: bool = False, tf_compat: bool = False, check_finite: bool = False) -> torch.Tensor:
    """Noise-contrastive estimation with tf.nn.nce_loss's semantics: candidates o = z - log Q (true labels and
    one shared draw of K ids), loss_b = sum_t sigmoid_xent(o_t, 1/T) + sum_k sigmoid_xent(o_k, 0), masked hits
    contributing 0. remove_accidental_hits defaults to False, as in TF. Arguments as sampled_softmax_loss;
    reduction 'none' gives TF's per-example (B,) loss."""
    y, sv, rule, cd = _samples(inputs, weight, bias, labels, num_sampled, sampler, "logq", remove_accidental_hits,
                               reduction, sampled_values, generator, num_true, True, unique, False, tf_compat,
                               check_finite)
    T = y.shape[1]
    u, v = CandidateLogits.apply(inputs, weight, bias, y, sv.sampled_candidates, cd, sparse)
    o_t = u - torch.log(sv.true_expected_count.to(y.device, torch.float64)).to(cd)  # (B, T)
    o_s = v - torch.log(sv.sampled_expected_count.to(torch.float64)).to(cd)  # (B, K)
    # in place on a fresh tensor; softplus(-FLT_MAX) = 0, and so is its gradient
    mask_(o_s, hit_mask(sv.sampled_candidates, y, rule))
    # sigmoid_xent(o, l) = softplus(o) - o l, as TF computes it
    loss = (F.softplus(o_t) - o_t / T).sum(1) + F.softplus(o_s).sum(1)  # (B,)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


class _GradBuffers:
    """Dense gradients for the module's weight and bias that are filled from backward's sparse rows and reused
    from step to step instead of allocating a fresh (C, d) tensor every time.

    When backward leaves a sparse .grad (it was None: after opt.zero_grad(), PyTorch's set_to_none=True),
    densify() swaps in the reused buffer with those rows added. Only the rows that the module's own sparse
    gradients touched are zeroed first, if nothing else wrote to the buffer: its version counter must show
    exactly one in-place add per sparse gradient seen (a dense gradient from a tied weight, clipping, or any
    other in-place write breaks the count). Otherwise the whole buffer is zeroed. A buffer that anyone else
    still references (a .grad kept from an earlier step) is never reused. A .grad that is already dense
    (zero_grad(set_to_none=False), accumulation over micro-batches) gets the rows added in place by autograd."""

    def __init__(self):
        self.state = {}  # name -> [buffer, rows touched (index tensors), expected version]
        self.last = {}  # name -> how its last buffer was prepared: 'fresh', 'rows' or 'full' (for tests)

    def seen(self, name, param, grad):
        """Tensor hook: the total gradient of one backward, just before autograd adds it into param.grad."""
        st = self.state.get(name)
        if st is not None and param.grad is st[0] and grad.is_sparse:
            st[1].append(grad._indices()[0])
            st[2] += 1  # autograd's `grad += new` bumps the version once
        return grad

    def densify(self, name, param) -> None:
        """Post-accumulate hook: a sparse .grad becomes the reused dense buffer plus its rows."""
        g = param.grad
        if g is None or not g.is_sparse:
            return
        st = self.state.get(name)
        buf = st[0] if st is not None else None
        # references: self.state's list, `buf`, getrefcount's argument; any more is a user's
        if buf is None or buf.shape != param.shape or buf.dtype != param.dtype or buf.device != param.device \
                or sys.getrefcount(buf) > 3:
            buf, self.last[name] = torch.zeros_like(param, memory_format=torch.contiguous_format), "fresh"
        elif buf._version == st[2]:
            if st[1]:
                buf.index_fill_(0, torch.cat(st[1]), 0)
            self.last[name] = "rows"
        else:
            buf.zero_()
            self.last[name] = "full"
        if g.dim() == 1:  # the bias: index_add_ of the values is 15x faster than adding a 1-D sparse tensor
            buf.index_add_(0, g._indices()[0], g._values())
        else:
            buf.add_(g)
        self.state[name] = [buf, [g._indices()[0]], buf._version]
        param.grad = buf


class SampledSoftmaxLoss(nn.Module):
    """Output layer with weight (C, d) and bias (C,) trained by sampled softmax; exact softmax in eval mode.

    forward(x, labels) -> the sampled loss in training mode, the exact full-softmax loss in eval mode.
    full_logits(x) -> (B, C) logits for evaluation.

    Gradients. sparse=True: weight.grad and bias.grad are sparse COO tensors (torch.optim.SGD, SparseAdam).
    sparse=False (default): they are dense, so Adam and AdamW work, yet no step allocates or adds a (C, d)
    tensor: backward's K + B*T sampled rows are added into the dense .grad. After opt.zero_grad()
    (set_to_none=True, PyTorch's default), backward hands the module's reused buffer back as .grad, zeroing
    only the rows that the last step wrote (_GradBuffers says when it zeroes all of it). With
    zero_grad(set_to_none=False), PyTorch zeroes the whole .grad itself. torch.autograd.grad with respect to the
    module's weight returns a sparse tensor.
    tf_compat=True (estimator 'logq'): TensorFlow's expected counts and hit rule (docs/derivations.md, section 5).
    in_batch=True (with num_sampled=None): the other labels of each batch are the negatives, corrected by the
    sampler's q (pass the label marginal, e.g. UnigramSampler(label_counts, power=1.0)), as in Yi et al. 2019.
    """

    loss_fn = staticmethod(sampled_softmax_loss)

    def __init__(
        self,
        num_classes: int,
        dim: int,
        num_sampled: int | None,
        sampler: Sampler | str | None = None,
        estimator: str = "importance",
        remove_accidental_hits: bool | str = True,
        shared: bool = True,
        unique: bool = False,
        sparse: bool = False,
        bias: bool = True,
        num_true: int = 1,
        counts=None,
        in_batch: bool = False,
        tf_compat: bool = False,
        check_finite: bool = False,
    ):
        super().__init__()
        if in_batch and (num_sampled is not None or num_true != 1):
            raise SoftmaxlabError(
                "in_batch=True uses the other labels of the batch as negatives; pass num_sampled=None, num_true=1"
            )
        if not in_batch:
            _num_sampled(num_sampled)
        if dim < 1 or num_classes < 2:
            raise SoftmaxlabError(f"need dim >= 1 and num_classes >= 2, got {dim}, {num_classes}")
        check_options(estimator, "mean", remove_accidental_hits)
        if tf_compat and estimator != "logq":
            raise SoftmaxlabError("tf_compat=True reproduces tf.nn.sampled_softmax_loss; pass estimator='logq'")
        if isinstance(sampler, str):
            sampler = make_sampler(sampler, num_classes, counts=counts)
        self.sampler = sampler if sampler is not None else LogUniformSampler(num_classes)
        if self.sampler.num_classes != num_classes:
            raise SoftmaxlabError(
                f"the sampler covers {self.sampler.num_classes} classes, not {num_classes}; rebuild it"
            )
        self.num_classes, self.dim, self.num_sampled = num_classes, dim, num_sampled
        self.estimator, self.remove_accidental_hits = estimator, remove_accidental_hits
        self.shared, self.unique, self.sparse, self.num_true = shared, unique, sparse, num_true
        self.in_batch, self.tf_compat, self.check_finite = in_batch, tf_compat, check_finite
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None
        nn.init.normal_(self.weight, std=dim**-0.5)
        self._install_hooks()

    def _install_hooks(self) -> None:
        """The dense-gradient machinery (_GradBuffers); pickling drops tensor hooks, so __setstate__ reinstalls."""
        self._grads = _GradBuffers()
        for name, p in (("weight", self.weight), ("bias", self.bias)):
            if p is None:
                continue
            p.register_hook(lambda g, name=name, p=p: self._grads.seen(name, p, g))
            p.register_post_accumulate_grad_hook(lambda p, name=name: self._densify(name, p))

    def _densify(self, name, p) -> None:
        if not self.sparse:
            self._grads.densify(name, p)

    def _kwargs(self) -> dict:
        # sparse=True always: backward's sparse rows are added into a dense .grad (see _GradBuffers)
        return dict(sampler=self.sampler, remove_accidental_hits=self.remove_accidental_hits,
                    num_true=self.num_true, unique=self.unique, sparse=True, tf_compat=self.tf_compat,
                    check_finite=self.check_finite, estimator=self.estimator, shared=self.shared,
                    in_batch=self.in_batch)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                sampled_values=None):
        """sampled_values: this step's fixed candidates (e.g. mixed_sampled_values) instead of the module's draw."""
        if not self.training:
            return self.full_loss(x, labels)
        kw = self._kwargs()
        if sampled_values is not None and "in_batch" in kw:  # NCELoss has none
            kw["in_batch"] = False
        return self.loss_fn(x, self.weight, self.bias, labels, None if sampled_values is not None else self.num_sampled,
                            generator=generator, sampled_values=sampled_values, **kw)

    def full_logits(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.weight.T
        return z + self.bias if self.bias is not None else z

    def metrics(self, x: torch.Tensor, labels: torch.Tensor, topk=(1, 5, 10), chunk_size: int | None = None):
        """Exact loss, perplexity and top-k accuracy over all C classes without a (B, C) tensor (metrics.py)."""
        return exact_metrics(x, self.weight, self.bias, labels, topk=topk, chunk_size=chunk_size)

    def full_loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Exact softmax cross-entropy (target weight 1/num_true per label), batch mean."""
        y = prepare(x, self.weight, self.bias, labels, self.num_true)
        z = self.full_logits(x).float() if x.dtype in (torch.float16, torch.bfloat16) else self.full_logits(x)
        return (torch.logsumexp(z, 1) - z.gather(1, y).mean(1)).mean()

    def __getstate__(self):  # pickling (torch.save(module), deepcopy) leaves the reusable gradient buffers behind
        return {**self.__dict__, "_grads": None}

    def __setstate__(self, state):
        super().__setstate__(state)
        self._install_hooks()

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, dim={self.dim}, num_sampled={self.num_sampled}, "
                f"estimator={self.estimator!r}, sampler={self.sampler!r}")


class NCELoss(SampledSoftmaxLoss):
    """Output layer trained by nce_loss (tf.nn.nce_loss's semantics); exact softmax in eval mode. Arguments and
    gradients as SampledSoftmaxLoss, without estimator, shared and in_batch (NCE's draws are shared)."""

    loss_fn = staticmethod(nce_loss)

    def __init__(self, num_classes: int, dim: int, num_sampled: int, sampler=None,
                 remove_accidental_hits: bool | str = False, **kwargs):
        super().__init__(num_classes, dim, num_sampled, sampler, estimator="logq",
                         remove_accidental_hits=remove_accidental_hits, **kwargs)

    def _kwargs(self) -> dict:
        return {k: v for k, v in super()._kwargs().items() if k not in ("estimator", "shared", "in_batch")}
