"""Reference closed forms of the sampled losses, written from docs/derivations.md and independent of the fast
Functions: they build dense (B, C) tensors, for checks on small problems only (gradcheck.py, the tests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softmaxlab.candidates import SampledValues, check_options, check_sampled_values, prepare
from softmaxlab.errors import SoftmaxlabError


def sampled_softmax_grads(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    sampled_values,
    estimator: str = "importance",
    remove_accidental_hits: bool = True,
    reduction: str = "mean",
    num_true: int | None = None,
    in_batch: bool = False,
    with_dx: bool = False,
):
    """Reference closed form of the sampled softmax loss and its gradients.

    For each row, D_b = sum_j A_bj e^{z_bj} with A the estimator's weight per class (counts n_j of class j
    in the sample times its weight, plus the true labels), and loss_b = log D_b - sum_j Y_bj z_bj - shift_b,
    Y the target weights (1/T per true label). Then dl/dz_bj = A_bj e^{z_bj} / D_b - Y_bj,
    dW = G^T x, db = sum_b G_b, dx = G W. Returns (loss, dW, db) or, with with_dx, (loss, dW, db, dx).
    """
    check_options(estimator, reduction, remove_accidental_hits)
    y, sv, z = _dense(inputs, weight, bias, labels, sampled_values, num_true)
    B = y.shape[0]
    A, Y, shift = reference_weights(estimator, y, sv, weight.shape[0], remove_accidental_hits, in_batch, inputs.dtype)
    m = torch.where(A > 0, z, torch.full_like(z, -torch.inf)).max(1, keepdim=True).values  # (B, 1)
    E = A * torch.exp(z - m)  # (B, C) terms of D, shifted by the row max
    D = E.sum(1, keepdim=True)
    loss = (torch.log(D) + m).squeeze(1) - (Y * z).sum(1) - shift  # (B,)
    G = E / D - Y  # (B, C) dl/dz
    if reduction == "mean":
        loss, G = loss.mean(), G / B
    elif reduction == "sum":
        loss = loss.sum()
    else:
        raise SoftmaxlabError("sampled_softmax_grads returns gradients of a scalar; use reduction 'mean' or 'sum'")
    out = (loss, G.T @ inputs, G.sum(0) if bias is not None else None)
    return (*out, G @ weight) if with_dx else out


def _dense(inputs, weight, bias, labels, sampled_values, num_true):
    """Checked labels (B, T) and sampled values, and the dense logits z (B, C)."""
    if num_true is None:
        num_true = 1 if labels.dim() == 1 else labels.shape[1]
    y = prepare(inputs, weight, bias, labels, num_true)
    sv = check_sampled_values(sampled_values, *y.shape, weight.shape[0], inputs.device)
    return y, sv, inputs @ weight.T + (bias if bias is not None else 0.0)


def _hits(ids, is_true, rule) -> torch.Tensor:
    """(B, K) bool: sampled ids that are true labels of their row; TF's rule ('tf'): only an id's last copy."""
    hit = is_true.gather(1, ids)
    if rule == "tf":
        later = (ids[:, :, None] == ids[:, None, :]).triu(1).any(2)  # (B, K) the id has a later copy
        hit = hit & ~later
    return hit


def reference_weights(estimator, y, sv: SampledValues, C, remove_hits, in_batch, dtype):
    """A (B, C): weight of e^{z_j} in D; Y (B, C): target weights; shift (B,): the loss's constant term."""
    B, T = y.shape
    ids = sv.sampled_candidates
    ids = ids.expand(B, -1) if ids.dim() == 1 else ids  # (B, K) one row of draws per example
    K = ids.shape[1]
    k_eff = K - 1 if in_batch else K
    Qs = sv.sampled_expected_count.to(dtype).expand(B, K)
    Qt = sv.true_expected_count.to(dtype)
    # as posed: (1/K) sum_{j in S} q_j e^{z_j}; importance and logq: sum_{j in S} e^{z_j} / Q_j
    if estimator == "as_posed":
        q = sv.sampled_probs if sv.sampled_probs is not None else sv.sampled_expected_count / k_eff
        w = q.to(dtype).expand(B, K) / k_eff
    elif estimator == "uncorrected":
        w = torch.ones_like(Qs)
    else:
        w = 1.0 / Qs
    onehot_true = F.one_hot(y, C).to(dtype)  # (B, T, C)
    is_true = onehot_true.sum(1) > 0  # (B, C) the row's true classes
    keep = torch.ones(B, K, dtype=dtype, device=y.device)
    if remove_hits is not False:
        keep = keep * (~_hits(ids, is_true, remove_hits)).to(dtype)
    if in_batch:
        keep = keep * (1.0 - torch.eye(B, dtype=dtype, device=y.device))
    A = torch.zeros(B, C, dtype=dtype, device=y.device).scatter_add_(1, ids, keep * w)  # n_j * weight_j per class
    if estimator in ("logq", "uncorrected"):  # each true column e^{z}/Q (e^{z}), repeats included, as TF does
        A = A + (onehot_true / (Qt[:, :, None] if estimator == "logq" else 1.0)).sum(1)
        shift = -torch.log(Qt).mean(1) if estimator == "logq" else torch.zeros(B, dtype=dtype, device=y.device)
    else:
        A = A + is_true.to(dtype)  # each distinct true class once: D estimates sum_j e^{z_j}
        shift = torch.zeros(B, dtype=dtype, device=y.device)
    Y = onehot_true.sum(1) / T
    return A, Y, shift


def nce_grads(inputs, weight, bias, labels, sampled_values, remove_accidental_hits=False, num_true=None):
    """NCE (tf.nn.nce_loss) in closed form, per example: with o = z - log Q on the true and sampled candidates
    and m_k = 0 on masked hits, l_b = sum_t [softplus(o_t) - o_t / T] + sum_k m_k softplus(o_k), and
    dl/dz_j = sum_t 1[y_t = j] (sigmoid(o_t) - 1/T) + sum_k 1[s_k = j] m_k sigmoid(o_k).
    Returns (loss (B,), dW, db, dx) of the summed loss."""
    check_options("logq", "sum", remove_accidental_hits)
    y, sv, z = _dense(inputs, weight, bias, labels, sampled_values, num_true)
    B, T = y.shape
    C, dtype = weight.shape[0], z.dtype
    ids = sv.sampled_candidates.expand(B, -1) if sv.sampled_candidates.dim() == 1 else sv.sampled_candidates
    o_t = z.gather(1, y) - torch.log(sv.true_expected_count.to(dtype))  # (B, T)
    o_s = z.gather(1, ids) - torch.log(sv.sampled_expected_count.to(dtype).expand(B, -1))  # (B, K)
    keep = torch.ones_like(o_s)
    if remove_accidental_hits is not False:
        keep = (~_hits(ids, F.one_hot(y, C).sum(1) > 0, remove_accidental_hits)).to(dtype)
    loss = (F.softplus(o_t) - o_t / T).sum(1) + (keep * F.softplus(o_s)).sum(1)
    G = torch.zeros(B, C, dtype=dtype).scatter_add_(1, y, torch.sigmoid(o_t) - 1.0 / T)
    G = G.scatter_add_(1, ids, keep * torch.sigmoid(o_s))  # (B, C) dl/dz, repeated ids add up
    return loss, G.T @ inputs, G.sum(0) if bias is not None else None, G @ weight
