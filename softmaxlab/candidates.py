"""The candidate set of a sampled loss: sampled values, their checks, the draws per mode, accidental hits,
and each estimator's log-weights on the candidate logits (docs/derivations.md, sections 2-6).

Every sampled loss here scores the candidates [y_1..y_T, s_1..s_K] of each row: the T true labels and the
K sampled ids. This module decides which candidates there are, which are masked, and what is added to their
logits; sampled.py turns that into a loss.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from softmaxlab.errors import SoftmaxlabError
from softmaxlab.samplers import LogUniformSampler, Sampler, make_sampler

ESTIMATORS = ("importance", "as_posed", "logq", "uncorrected")
REDUCTIONS = ("mean", "sum", "none")
HIT_RULES = (True, False, "tf")
_TINY_COUNT = 1e-300  # our own draws' counts are clamped here: a true label with q = 0 would give log 0
_DENSE_HITS = 1 << 18  # B * T * K up to which a dense (B, K) comparison beats sorting (fewer, cheaper ops)


class SampledValues(NamedTuple):
    """Fixed samples, TensorFlow's (sampled_candidates, true_expected_count, sampled_expected_count) plus extras."""

    sampled_candidates: torch.Tensor
    """int64 ids: (K,) shared by the batch, or (B, K) one draw per row."""
    true_expected_count: torch.Tensor
    """(B, T): Q of each true label."""
    sampled_expected_count: torch.Tensor
    """(K,) or (B, K): Q of each sampled id (for per-row draws: of that row's restricted proposal)."""
    sampled_probs: torch.Tensor | None = None
    """q of each sampled id under the base proposal (as_posed's weights); default Q / K."""
    num_tries: int | torch.Tensor | None = None
    """Draws made: K with replacement, T >= K for unique draws ((B,) for per-row unique draws)."""


# ---- input checks ----------------------------------------------------------------------------------------


def is_int(t: torch.Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


def _check_on_device(ok: torch.Tensor, message: str) -> None:
    """Raise `message` unless the bool tensor ok is True: a host sync on the CPU, an async assert elsewhere."""
    if ok.device.type == "cpu":
        if not bool(ok):
            raise SoftmaxlabError(message)
    else:  # no host sync on accelerators: a device-side assert
        torch._assert_async(ok, message)


def check_range(ids: torch.Tensor, C: int, what: str) -> None:
    if ids.numel() == 0:
        return
    if ids.device.type == "cpu":
        lo, hi = (int(v) for v in torch.aminmax(ids))
        if lo < 0 or hi >= C:
            raise SoftmaxlabError(f"{what} must lie in [0, {C}), got values in [{lo}, {hi}]; fix the {what}")
    else:
        _check_on_device(((ids >= 0) & (ids < C)).all(), f"{what} out of range [0, {C})")


def check_finite(what: str, *tensors) -> None:
    """check_finite=True: NaN or inf in inputs, weight or bias is an error instead of a NaN loss."""
    for name, t in zip(what.split(), tensors):
        if t is not None:
            _check_on_device(torch.isfinite(t).all(), f"{name} contains NaN or inf; fix the model or the data "
                                                      f"(check_finite=True found it)")


def check_options(estimator, reduction, remove_accidental_hits=True) -> None:
    if estimator not in ESTIMATORS:
        raise SoftmaxlabError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if reduction not in REDUCTIONS:
        raise SoftmaxlabError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if not any(remove_accidental_hits is r or remove_accidental_hits == r for r in HIT_RULES):
        raise SoftmaxlabError(f"remove_accidental_hits must be True, False or 'tf', got {remove_accidental_hits!r}")


def prepare(inputs, weight, bias, labels, num_true):
    """Validate shapes and dtypes; return labels as (B, T) int64."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 2 or not inputs.dtype.is_floating_point:
        raise SoftmaxlabError("inputs must be a float tensor of shape (B, d); flatten the features first")
    B, d = inputs.shape
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != d:
        raise SoftmaxlabError(
            f"weight must be (num_classes, {d}) to match inputs (B, {d}), got "
            f"{tuple(getattr(weight, 'shape', ()))}; pass the (C, d) class embedding matrix"
        )
    if not weight.dtype.is_floating_point:
        raise SoftmaxlabError(f"weight must be floating point, got {weight.dtype}")
    C = weight.shape[0]
    if C < 2:
        raise SoftmaxlabError(f"need at least 2 classes, weight has {C} rows")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (C,)):
        raise SoftmaxlabError(
            f"bias must have shape ({C},), got {tuple(getattr(bias, 'shape', ()))}; pass one bias per class or None"
        )
    if not isinstance(labels, torch.Tensor) or not is_int(labels):
        raise SoftmaxlabError("labels must be an integer tensor of class ids, shape (B,) or (B, num_true)")
    if isinstance(num_true, bool) or not isinstance(num_true, int) or num_true < 1:
        raise SoftmaxlabError(f"num_true must be an integer >= 1, got {num_true!r}")
    y = labels[:, None] if labels.dim() == 1 else labels
    if y.dim() != 2 or y.shape[0] != B:
        raise SoftmaxlabError(
            f"labels must have shape ({B},) or ({B}, num_true) to match inputs, got {tuple(labels.shape)}"
        )
    if y.shape[1] != num_true:
        raise SoftmaxlabError(
            f"labels have {y.shape[1]} columns but num_true={num_true}; pass num_true=labels.shape[1]"
        )
    if inputs.device != weight.device or (bias is not None and bias.device != weight.device):
        raise SoftmaxlabError("inputs, weight and bias must be on the same device; move them with .to()")
    y = y.to(device=inputs.device, dtype=torch.long)
    check_range(y, C, "labels")
    return y


def check_sampled_values(sv, B: int, T: int, C: int, device) -> SampledValues:
    """User-given samples: ids in [0, C), expected counts finite and > 0, shapes that fit the batch."""
    if not isinstance(sv, SampledValues):
        if not isinstance(sv, (tuple, list)) or len(sv) not in (3, 4, 5):
            raise SoftmaxlabError(
                "sampled_values must be (sampled_candidates, true_expected_count, sampled_expected_count)"
            )
        sv = SampledValues(*sv)
    ids = torch.as_tensor(sv.sampled_candidates, device=device)
    if not is_int(ids) or ids.dim() not in (1, 2) or (ids.dim() == 2 and ids.shape[0] != B) or ids.shape[-1] < 1:
        raise SoftmaxlabError(
            f"sampled_candidates must be integer ids of shape (K,) or ({B}, K), got {tuple(ids.shape)} {ids.dtype}"
        )
    ids = ids.long()
    check_range(ids, C, "sampled_candidates")
    Qt = torch.as_tensor(sv.true_expected_count, device=device)
    if Qt.dim() == 1 and T == 1 and Qt.shape[0] == B:
        Qt = Qt[:, None]
    if tuple(Qt.shape) != (B, T):
        raise SoftmaxlabError(f"true_expected_count must have shape ({B}, {T}), got {tuple(Qt.shape)}")
    Qs = torch.as_tensor(sv.sampled_expected_count, device=device)
    if Qs.shape != ids.shape:
        raise SoftmaxlabError(
            f"sampled_expected_count must have the shape of sampled_candidates {tuple(ids.shape)}, "
            f"got {tuple(Qs.shape)}"
        )
    for name, Q in (("true_expected_count", Qt), ("sampled_expected_count", Qs)):
        if not Q.dtype.is_floating_point:
            raise SoftmaxlabError(f"{name} must be floating point, got {Q.dtype}; pass expected counts")
        _check_on_device((torch.isfinite(Q) & (Q > 0)).all(),
                         f"{name} must be finite and > 0 (an expected count), got a value <= 0, NaN or inf; "
                         f"pass the counts your sampler returned")
    probs = sv.sampled_probs
    if probs is not None:
        probs = torch.as_tensor(probs, device=device)
        if probs.shape != ids.shape:
            raise SoftmaxlabError(f"sampled_probs must have shape {tuple(ids.shape)}, got {tuple(probs.shape)}")
    return SampledValues(ids, Qt, Qs, probs, sv.num_tries)


def resolve_sampler(sampler, C: int, device, estimator: str = "logq") -> Sampler:
    if sampler is None:
        return LogUniformSampler(C, device=device)
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, C, device=device)
    if not isinstance(sampler, Sampler):
        raise SoftmaxlabError(f"sampler must be a softmaxlab Sampler or a name, got {type(sampler).__name__}")
    if sampler.num_classes != C:
        raise SoftmaxlabError(
            f"the sampler covers {sampler.num_classes} classes but weight has {C} rows; build it with num_classes={C}"
        )
    if sampler.device != torch.device(device):
        sampler.to(device)
    if estimator == "importance" and sampler.support < C and not getattr(sampler, "_warned_zero_mass", False):
        sampler._warned_zero_mass = True  # once per sampler
        warnings.warn(f"{C - sampler.support} of {C} classes have q = 0 under this sampler: they are never "
                      f"negatives, so the importance estimate of the normaliser leaves them out", stacklevel=3)
    return sampler


# ---- drawing ---------------------------------------------------------------------------------------------


def draw_sampled_values(
    labels: torch.Tensor,
    num_sampled: int | None,
    sampler: Sampler,
    *,
    shared: bool = True,
    unique: bool = False,
    generator: torch.Generator | None = None,
    in_batch: bool = False,
    tf_counts: bool = False,
) -> SampledValues:
    """Draw negatives for labels (B, T) and their expected counts, for the given draw mode.

    tf_counts: TensorFlow's expected counts (K q when a unique draw took exactly K tries), shared draws only."""
    y = labels[:, None] if labels.dim() == 1 else labels
    B = y.shape[0]
    if in_batch:
        if B < 2 or y.shape[1] != 1:
            raise SoftmaxlabError("in_batch negatives need a batch of >= 2 rows with one label each (num_true=1)")
        ids, k_eff = y[:, 0], B - 1  # the row's own label is masked, the other B - 1 are the draws
        q = sampler.probs(ids)
        return SampledValues(ids, k_eff * sampler.probs(y), k_eff * q, q, k_eff)
    K = num_sampled
    if shared:
        draw = sampler.sample(K, generator=generator, unique=unique)
        ids = draw.ids
        kw = dict(unique=unique, num_tries=draw.num_tries, convention="tf" if tf_counts else "inclusion")
        # with replacement Q = K q, so as_posed's q is Q / K: no second pass over the ids
        return SampledValues(ids, sampler.expected_count(y, K, **kw), sampler.expected_count(ids, K, **kw),
                             sampler.probs(ids) if unique else None, draw.num_tries)
    draw = sampler.sample(K, generator=generator, exclude=y, unique=unique)
    ids = draw.ids  # (B, K)
    qy = sampler.probs(y)  # (B, T)
    first = ~repeated_in_row(y)
    q_excl = (qy * first).sum(1)  # (B,) mass of the distinct true labels
    q = sampler.probs(ids)
    if unique:  # inclusion probabilities under q'; the true labels keep TF's count under q (as for K q_c)
        Qs = sampler.expected_count_excluding(ids, K, draw.num_tries, q_excl, first.sum(1))
        Qt = sampler.expected_count(y, K, unique=True, num_tries=draw.num_tries[:, None])
        return SampledValues(ids, Qt, Qs, q, draw.num_tries)
    Qs = K * q / (1.0 - q_excl)[:, None]  # K q'_j
    return SampledValues(ids, K * qy, Qs, q, K)


def repeated_in_row(y: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: y[b, t] equals an earlier label y[b, t'] (t' < t) of its row."""
    T = y.shape[1]
    eq = y[:, :, None] == y[:, None, :]  # (B, T, T)
    earlier = torch.ones(T, T, dtype=torch.bool, device=y.device).tril(-1)
    return (eq & earlier).any(2)


# ---- accidental hits -------------------------------------------------------------------------------------


def last_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """Bool, shape of ids (K,) or (B, K): True where no later entry of the same row holds the same id.

    TensorFlow's compute_accidental_hits maps each sampled id to its last position, so only that copy is a hit."""
    sorted_ids, perm = torch.sort(ids, dim=-1, stable=True)  # equal ids keep their order
    last_sorted = torch.ones_like(sorted_ids, dtype=torch.bool)
    last_sorted[..., :-1] = sorted_ids[..., 1:] != sorted_ids[..., :-1]
    return torch.empty_like(last_sorted).scatter_(-1, perm, last_sorted)


def hit_positions(ids: torch.Tensor, y: torch.Tensor, last_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) with ids[cols] == y[rows, t] for some t, for shared ids (K,) and labels (B, T); with
    last_only, only the last position of each id (TensorFlow's rule; a label repeated in a row repeats its pair).

    Sorts the K ids once and binary-searches every label: O((K + B T) log K) instead of a (B, K) comparison.
    The number of hits is read on the host, so this is the CPU path (accelerators use the dense mask).
    """
    B, T = y.shape
    sorted_ids, perm = torch.sort(ids, stable=True)  # copies of an id keep their order: the last is last
    yf = y.reshape(-1)  # (B*T,)
    lo = torch.searchsorted(sorted_ids, yf)
    n = torch.searchsorted(sorted_ids, yf, right=True) - lo  # (B*T,) copies of each label among the ids
    row_of = torch.arange(B, device=ids.device).repeat_interleave(T)  # (B*T,)
    if last_only:
        found = n > 0
        return row_of[found], perm[(lo + n - 1)[found]]
    total = int(n.sum())
    rows = torch.repeat_interleave(row_of, n, output_size=total)
    first = torch.repeat_interleave(lo - (torch.cumsum(n, 0) - n), n, output_size=total)  # sorted pos - offset
    return rows, perm[first + torch.arange(total, device=ids.device)]


def hit_mask(ids: torch.Tensor, y: torch.Tensor, rule, dense: bool = False) -> torch.Tensor | tuple | None:
    """The masked sampled logits: None, a (B, K) bool tensor, or (rows, cols) index tensors (CPU, shared ids,
    unless dense)."""
    if rule is False:
        return None
    if ids.dim() == 1 and ids.device.type == "cpu" and not dense and y.numel() * ids.numel() > _DENSE_HITS:
        return hit_positions(ids, y, last_only=rule == "tf")  # hits are rare: found without a (B, K) pass
    ids_b = ids[None, :] if ids.dim() == 1 else ids  # (1 or B, K); dense: no host sync on accelerators
    mask = ids_b == y[:, :1] if y.shape[1] == 1 else (ids_b[:, None, :] == y[:, :, None]).any(1)  # (B, K)
    return mask & last_occurrence(ids_b) if rule == "tf" else mask


# ---- the estimators as log-weights -----------------------------------------------------------------------


def collapse_repeats(ids: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Shared ids that repeat, scored once: (the distinct ids (K_u,), their log-weights (K_u,)) with
    beta'_j = log sum over the copies k of id j of e^{beta_k}, so that sum_k e^{v_k + beta_k} =
    sum_j e^{v_j + beta'_j} exactly (log n_j added when the copies' weights are equal). The loss and every
    gradient are unchanged, while the GEMMs and the softmax shrink by K_u / K: 0.62 for 4096 log-uniform draws
    of 10^6 classes. None when no id repeats. CPU only: the distinct count is read on the host."""
    uniq, inv = torch.unique(ids, sorted=True, return_inverse=True)
    if uniq.numel() == ids.numel():
        return None
    top = torch.full(uniq.shape, -math.inf, dtype=beta.dtype).scatter_reduce_(0, inv, beta, "amax")
    s = torch.zeros(uniq.shape, dtype=beta.dtype).index_add_(0, inv, torch.exp(beta - top[inv]))
    return uniq, top + torch.log(s)


def log_weights(estimator, y, sv: SampledValues, remove_accidental_hits, in_batch, cd):
    """ids, alpha (B, T), beta (K,) or (B, K), mask, gamma (B, T), in the compute dtype cd: the candidates'
    logits are [u + alpha, v + beta] with v masked, and the target term is mean_t(u + gamma). ids are the
    sampled ids, their repeats collapsed (collapse_repeats) where the hit rule masks by id."""
    ids = sv.sampled_candidates
    B, T = y.shape
    K = ids.shape[-1]
    k_eff = K - 1 if in_batch else K
    neg = torch.finfo(cd).min
    zero = torch.zeros((), dtype=cd, device=y.device)
    if estimator == "as_posed":
        q = sv.sampled_probs if sv.sampled_probs is not None else sv.sampled_expected_count / k_eff
        beta = (torch.log(q.to(torch.float64)) - math.log(k_eff)).to(cd)
    elif estimator == "uncorrected":
        beta = zero.expand(ids.shape)
    else:
        beta = (-torch.log(sv.sampled_expected_count.to(torch.float64).clamp_min(_TINY_COUNT))).to(cd)
    # TF's rule masks one copy of a repeated id and in_batch masks by position: those keep every copy
    if ids.dim() == 1 and ids.device.type == "cpu" and not in_batch and remove_accidental_hits != "tf":
        ids, beta = collapse_repeats(ids, beta) or (ids, beta)
    mask = hit_mask(ids, y, remove_accidental_hits, dense=in_batch)
    if in_batch:
        eye = torch.eye(B, dtype=torch.bool, device=y.device)
        mask = eye if mask is None else mask | eye
    if estimator == "logq":
        alpha = -torch.log(sv.true_expected_count.to(y.device, torch.float64).clamp_min(_TINY_COUNT)).to(cd)
        gamma = alpha
    elif estimator == "uncorrected":  # TF's candidates and repeats, no -log Q: alpha = gamma = 0
        alpha = gamma = zero.expand(B, T)
    else:
        alpha = torch.where(repeated_in_row(y), neg, zero) if T > 1 else zero.expand(B, T)
        gamma = zero.expand(B, T)
    return ids, alpha, beta, mask, gamma
