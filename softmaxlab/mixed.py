"""Mixed negatives (Yang et al. 2020, "Mixed Negative Sampling"): one candidate set from the batch's labels,
K draws from a proposal q and user-given hard negatives, with the joint expected counts that keep the
importance and logq estimators correct (docs/derivations.md, section 12); and a streaming estimate of the
label marginal pi that the in-batch source needs (FrequencyEstimator).

For a batch of B rows with labels c_1..c_B, the candidate multiset is the B labels, the K draws s_1..s_K and
the hard negatives. Class j's expected count in it, as seen from a row whose label is not j, is

    Q_j = (B - 1) pi_j + K q_j + h_j        (h_j: copies of j in the hard negatives, per row if (B, H))

and the row's own label (and every other row with that label) is an accidental hit. merge=True returns each
distinct candidate once with sampled_expected_count Q_j / n_j (n_j its multiplicity): the importance and logq
losses then equal those of the multiset with every copy at 1/Q_j (section 12), on fewer candidates. Use the
result with remove_accidental_hits=True, the default of sampled_softmax_loss: it masks the row's own label.
For nce_loss pass merge=False (NCE sums one term per copy, so merging changes it) and
remove_accidental_hits=True (its default is False, which would count the row's own label as noise).
"""

from __future__ import annotations

import math

import torch

from softmaxlab.candidates import SampledValues, check_range, is_int
from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers import Sampler
from softmaxlab.samplers.core import check_probs


def _check_label_probs(label_probs, C: int | None, device) -> torch.Tensor:
    """pi: (C,) finite, >= 0, summing to 1 (within 1e-6, as ProbsSampler checks q); float64 on device."""
    if not isinstance(label_probs, torch.Tensor) or label_probs.dim() != 1 or not label_probs.dtype.is_floating_point:
        raise SoftmaxlabError(
            f"label_probs must be a 1-D float tensor (C,), got {type(label_probs).__name__} "
            f"{tuple(getattr(label_probs, 'shape', ()))}; pass FrequencyEstimator.probs() or the label marginal"
        )
    if C is not None and label_probs.shape[0] != C:
        raise SoftmaxlabError(
            f"label_probs has {label_probs.shape[0]} entries but the sampler covers {C} classes; pass one per class"
        )
    pi = label_probs.to(device, torch.float64)
    check_probs(pi, "label_probs")
    return pi


def _check_hard(hard, B: int, C: int, device) -> torch.Tensor | None:
    if hard is None:
        return None
    h = torch.as_tensor(hard, device=device)
    if not is_int(h) or h.dim() not in (1, 2) or (h.dim() == 2 and h.shape[0] != B) or h.shape[-1] < 1:
        raise SoftmaxlabError(
            f"hard_negatives must be integer ids of shape (H,) or ({B}, H), got {tuple(h.shape)} {h.dtype}"
        )
    h = h.long()
    check_range(h, C, "hard_negatives")
    return h


def _count_in(ids: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Copies of each id among pool, float64: ids (M,) with pool (H,), or ids (B, M) with pool (B, H) per row."""
    sp, ids = torch.sort(pool, dim=-1).values, ids.contiguous()
    return (torch.searchsorted(sp, ids, right=True) - torch.searchsorted(sp, ids)).to(torch.float64)


def mixed_sampled_values(
    labels: torch.Tensor,
    num_sampled: int,
    sampler: Sampler | None,
    label_probs: torch.Tensor | None,
    hard_negatives: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    in_batch: bool = True,
    merge: bool = True,
) -> SampledValues:
    """The mixed candidate set of one batch as SampledValues, for sampled_softmax_loss / SampledSoftmaxLoss
    (estimator 'importance' or 'logq', remove_accidental_hits=True) and nce_loss (merge=False).

    labels (B,) or (B, 1): one label per row. num_sampled: K draws with replacement from sampler (shared by the
    batch; 0 with sampler=None for none). label_probs: pi (C,), the label marginal the batch rows are drawn
    from (an exact marginal or FrequencyEstimator.probs(); needed with in_batch). hard_negatives: ids (H,)
    shared by the batch, or (B, H) per row (each row's own hard negatives are candidates of that row only;
    the candidates are then per row, (B, M): a batched gather instead of one GEMM). in_batch: the batch's
    labels are candidates. merge: each distinct candidate once with count Q_j / n_j (else every copy, at Q_j).
    Returns ids (M,) or (B, M), true_expected_count (B, 1) = Q_c, sampled_expected_count, float64.
    """
    if not isinstance(labels, torch.Tensor) or not is_int(labels) or labels.dim() not in (1, 2) \
            or (labels.dim() == 2 and labels.shape[1] != 1):
        raise SoftmaxlabError("labels must be integer class ids of shape (B,) or (B, 1): one label per row")
    y = labels.reshape(-1).long()
    B, device = y.shape[0], y.device
    if isinstance(num_sampled, bool) or not isinstance(num_sampled, int) or num_sampled < 0:
        raise SoftmaxlabError(f"num_sampled must be an integer >= 0, got {num_sampled!r}")
    K = num_sampled
    if K > 0 and not isinstance(sampler, Sampler):
        raise SoftmaxlabError(f"num_sampled={K} needs a softmaxlab Sampler as the proposal, got "
                              f"{type(sampler).__name__}; pass e.g. UnigramSampler(counts)")
    C = sampler.num_classes if isinstance(sampler, Sampler) else None
    if in_batch:
        if B < 2:
            raise SoftmaxlabError("in-batch negatives need a batch of >= 2 rows; pass in_batch=False")
        if label_probs is None:
            raise SoftmaxlabError("in_batch=True needs label_probs, the label marginal pi (C,); "
                                  "pass FrequencyEstimator.probs()")
        pi = _check_label_probs(label_probs, C, device)
        C = pi.shape[0]
    if C is None:
        raise SoftmaxlabError("no source of negatives: pass in_batch=True with label_probs, or num_sampled >= 1 "
                              "with a sampler")
    check_range(y, C, "labels")
    hard = _check_hard(hard_negatives, B, C, device)
    if not in_batch and K == 0 and hard is None:
        raise SoftmaxlabError("no negatives: pass in_batch=True, num_sampled >= 1 or hard_negatives")
    if in_batch and bool((pi[y] <= 0).any()):
        raise SoftmaxlabError("label_probs is 0 for a label of this batch, so pi cannot be its marginal; "
                              "smooth it (FrequencyEstimator.probs() adds one to every count)")
    draws = sampler.sample(K, generator=generator).ids.to(device) if K > 0 else y[:0]  # (K,)

    def q_shared(ids):  # (B - 1) pi_j + K q_j + copies among the shared hard negatives, float64
        Q = torch.zeros(ids.shape, dtype=torch.float64, device=device)
        if in_batch:
            Q = Q + (B - 1) * pi[ids]
        if K > 0:
            Q = Q + K * sampler.probs(ids).to(device)
        return Q + _count_in(ids, hard) if hard is not None and hard.dim() == 1 else Q

    pooled = [y] if in_batch else []
    pooled += [draws] + ([hard] if hard is not None and hard.dim() == 1 else [])
    ids = torch.cat(pooled)  # (M_all,) the shared multiset
    Qt = q_shared(y)  # (B,)
    if merge:
        ids, n = torch.unique(ids, return_counts=True)  # sorted, distinct
        n = n.to(torch.float64)
    else:
        n = torch.ones(ids.shape, dtype=torch.float64, device=device)
    if hard is None or hard.dim() == 1:
        return SampledValues(ids, Qt[:, None], q_shared(ids) / n)
    # per-row hard negatives: row b's candidates are the shared ones and its own H, each row's Q adds h_bj
    own = ids.expand(B, -1)  # (B, M0)
    Qs_own = (q_shared(ids)[None, :] + _count_in(own, hard)) / n  # (B, M0)
    Qs_hard = q_shared(hard) + _count_in(hard, hard)  # (B, H): one copy each, at the row's total Q
    Qt = Qt + _count_in(y[:, None], hard)[:, 0]
    return SampledValues(torch.cat([own, hard], 1), Qt[:, None], torch.cat([Qs_own, Qs_hard], 1))


class FrequencyEstimator:
    """Streaming estimate of the label marginal pi over num_classes classes, from the labels seen so far.

    decay=None: exact counts, n_j = every label j seen. decay in (0, 1): exponentially decayed counts,
    n_j <- decay * n_j + (count of j in the batch) at each update, so a batch t updates ago weighs decay^t and
    the estimate follows drift with an effective window of 1 / (1 - decay) batches (decay 0.99: 100 batches).
    probs() = (n + 1) / (sum(n) + C): add-one (Laplace) smoothing, so no class has pi = 0 (the in-batch
    expected count (B - 1) pi_j of a label that does occur must be > 0); uniform before the first update.
    """

    def __init__(self, num_classes: int, decay: float | None = None, device=None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise SoftmaxlabError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float))
                                  or not 0.0 < decay < 1.0 or not math.isfinite(decay)):
            raise SoftmaxlabError(f"decay must be None (exact counts) or in (0, 1), got {decay!r}; e.g. 0.99")
        self.num_classes, self.decay = num_classes, None if decay is None else float(decay)
        self.counts = torch.zeros(num_classes, dtype=torch.float64, device=device)  # (C,) n_j
        self.updates = 0

    def update(self, labels: torch.Tensor) -> None:
        """Count a batch of labels (any shape, ids in [0, C))."""
        if not isinstance(labels, torch.Tensor) or not is_int(labels):
            raise SoftmaxlabError("labels must be an integer tensor of class ids")
        y = labels.reshape(-1).to(self.counts.device, torch.long)
        check_range(y, self.num_classes, "labels")
        if self.decay is not None:
            self.counts.mul_(self.decay)
        self.counts.add_(torch.bincount(y, minlength=self.num_classes).to(torch.float64))
        self.updates += 1

    def probs(self) -> torch.Tensor:
        """pi (C,) float64, add-one smoothed: (n + 1) / (sum(n) + C)."""
        return (self.counts + 1.0) / (self.counts.sum() + self.num_classes)

    def state_dict(self) -> dict:
        return {"num_classes": self.num_classes, "decay": self.decay, "updates": self.updates,
                "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_classes") != self.num_classes or state.get("decay") != self.decay:
            raise SoftmaxlabError(
                f"state is for num_classes={state.get('num_classes')}, decay={state.get('decay')}, not "
                f"{self.num_classes}, {self.decay}; build the estimator with the saved settings"
            )
        counts = torch.as_tensor(state["counts"])
        if tuple(counts.shape) != (self.num_classes,):
            raise SoftmaxlabError(f"state counts have shape {tuple(counts.shape)}, not ({self.num_classes},)")
        self.counts = counts.to(self.counts.device, torch.float64).clone()
        self.updates = int(state["updates"])

    def __repr__(self) -> str:
        return f"FrequencyEstimator(num_classes={self.num_classes}, decay={self.decay}, updates={self.updates})"
