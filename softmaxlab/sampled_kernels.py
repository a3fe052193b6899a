"""The autograd Functions of the sampled losses: gather the candidate rows of W, score them, and scatter the
gradients back to those rows only (index_add, or a sparse COO tensor), never touching a (B, C) tensor.

  SampledSoftmaxXent  softmax cross-entropy over the candidates, the softmax fused into forward and backward
  CandidateLogits     the candidate logits (u (B, T), v (B, K)) alone, for losses written on top (NCE)
Both share gather() and candidate_grads(): the chain rule from dl/du, dl/dv to x, the W rows and the b entries.

Passes over the (B, K) sampled logits, the step's largest tensor: the forward GEMM writes them with the
log-weights and bias added in its epilogue; one max, one fused softmax (in place on the CPU) and the max of
that softmax give the log-sum-exp; backward reads them in its two GEMMs only, db riding in dW's GEMM as one
more column. The three (B, K, d) GEMMs go to oneDNN for float32 on the CPU (linear() below): torch's own sgemm
is MKL's, which runs its AVX2 code on AMD CPUs, at half of oneDNN's AVX-512 rate on the machine of
benchmarks/README.md. SOFTMAXLAB_GEMM=torch turns this off.
"""

from __future__ import annotations

import os

import torch
from torch.autograd.function import once_differentiable

_ONEDNN = (os.environ.get("SOFTMAXLAB_GEMM", "onednn") != "torch" and torch.backends.mkldnn.is_available()
           and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def linear(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias), (n, k) x (m, k) (+ (m,)) -> (n, m); oneDNN's fp32 GEMM on the CPU (the bias added in
    its epilogue), torch's matmul elsewhere."""
    if (_ONEDNN and a.dtype == b.dtype == torch.float32 and a.device.type == "cpu" and a.numel() and b.numel()
            and not torch.compiler.is_compiling()):
        # oneDNN has no primitive for an empty operand (torch returns zeros); under torch.compile inductor lowers
        # this op only for frozen weights, so the compiled graph gets torch's matmul, which it lowers itself
        if bias is not None:
            bias = bias.contiguous()
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    return a @ b.T if bias is None else torch.addmm(bias, a, b.T)


def gather(x, W, true_ids, sampled_ids, cd, beta=None):
    """Wt (B, T, d), Ws (K, d) or (B, K, d) in x's dtype; u (B, T) and v (B, K) in cd, without the bias.

    beta (K,) or (B, K) in cd, added to v: for shared draws in x's dtype it rides in the GEMM (one pass over
    (B, K) less)."""
    B, d = x.shape
    T = true_ids.shape[1]
    # index_select copies whole rows (memcpy); W[ids] goes through the elementwise index kernel
    Wt = W.index_select(0, true_ids.reshape(-1)).to(x.dtype).view(B, T, d)
    Ws = W.index_select(0, sampled_ids.reshape(-1)).to(x.dtype)
    u = torch.linalg.vecdot(Wt, x[:, None, :]).to(cd)  # (B, T); bmm of B (1, d) x (d, 1) products is 2-4x slower
    if sampled_ids.dim() == 2:
        Ws = Ws.view(B, sampled_ids.shape[1], d)  # not -1: B = 0 would leave it undefined
        v = torch.bmm(Ws, x[:, :, None]).squeeze(2).to(cd)
    elif beta is not None and x.dtype == cd:
        v, beta = linear(x, Ws, beta.expand(Ws.shape[0])), None
    else:
        v = linear(x, Ws).to(cd)
    return Wt, Ws, u, v if beta is None else v.add_(beta)


def candidate_grads(needs, x, Wt, Ws, true_ids, sampled_ids, gu, G, rx, w_meta, sparse):
    """(dx, dW, db) from dl/du = gu (B, T) and dl/dv = G * rx (G (B, K), rx (B, 1) per-row factors or None).

    Folding rx into (B, d) and (K,) factors saves a pass over (B, K) (shared draws only)."""
    (C, d), w_dtype, b_dtype = w_meta
    B, T = true_ids.shape
    shared = sampled_ids.dim() == 1
    dx = dW = db = None
    if needs[0]:
        dx = gu * Wt[:, 0] if T == 1 else (gu[:, :, None] * Wt).sum(1)  # (B, d); bmm is 5x slower here
        if shared:
            dx = torch.addcmul(dx, linear(G, Ws.T), rx) if rx is not None else dx + linear(G, Ws.T)
        else:
            dx = dx + torch.bmm(G[:, None, :], Ws).squeeze(1)
    rows = torch.cat([true_ids.reshape(-1), sampled_ids.reshape(-1)])  # (B*T + K) or (B*T + B*K)
    want_b = b_dtype is not None and needs[2]
    fold_b = shared and want_b and x.dtype in (torch.float32, torch.float64)  # db as one more column of dW's GEMM
    gw_samp = gb_samp = None
    if shared and (needs[1] or fold_b):
        # G^T [x r, r] (K, d[+1]), as (d[+1], B) x (B, K): the layout oneDNN and MKL run fastest; the left factor
        # is written transposed by the product itself (oneDNN's own transposing copy of it took up to 2.7x the
        # GEMM), and its last row r gives db without a pass over (B, K) of its own
        xrT = torch.empty(((d if needs[1] else 0) + fold_b, B), dtype=x.dtype, device=x.device)
        if needs[1]:
            torch.mul(x.T, rx.T, out=xrT[:d]) if rx is not None else xrT[:d].copy_(x.T)
        if fold_b:
            xrT[-1] = rx[:, 0] if rx is not None else 1
        g = linear(xrT, G.T).T
        gw_samp, gb_samp = g[:, :d], g[:, -1] if fold_b else None
    if shared and want_b and not fold_b:
        acc = torch.promote_types(G.dtype, torch.float32)  # 16-bit G sums in float32
        gb_samp = (G.T.to(acc) @ rx.to(acc)).squeeze(1) if rx is not None else G.sum(0, dtype=acc)  # (K,)
    if needs[1]:
        g_samp = gw_samp if shared else (G[:, :, None] * x[:, None, :]).reshape(-1, d)  # (K or B*K, d)
        vals = torch.empty((B * T + g_samp.shape[0], d), dtype=w_dtype, device=x.device)  # true rows, then sampled
        if w_dtype == x.dtype:
            torch.mul(gu[:, :, None], x[:, None, :], out=vals[:B * T].view(B, T, d))
        else:
            vals[:B * T].copy_((gu[:, :, None] * x[:, None, :]).reshape(B * T, d))
        vals[B * T:].copy_(g_samp)  # a transposed view: copy_ reads it twice as fast as cat does
        dW = scatter_rows(rows, vals, (C, d), sparse)
    if want_b:
        g_samp = gb_samp if shared else G.reshape(-1)  # (K,) or (B*K,)
        db = scatter_rows(rows, torch.cat([gu.reshape(-1).to(b_dtype), g_samp.to(b_dtype)]), (C,), sparse)
    return dx, dW, db


def scatter_rows(rows: torch.Tensor, vals: torch.Tensor, size, sparse: bool) -> torch.Tensor:
    """Sum vals into the given rows of a zero (C, ...) gradient; repeated rows add up. sparse: an uncoalesced COO
    tensor (autograd adds it into a dense .grad in place, or keeps it as a sparse .grad)."""
    if sparse:
        return torch.sparse_coo_tensor(rows[None], vals, size, check_invariants=False)
    return torch.zeros(size, dtype=vals.dtype, device=vals.device).index_add_(0, rows, vals)


def mask_(v, mask) -> None:
    """Set the masked entries of v (B, K) to finfo.min, TF's -FLT_MAX: exp() of it is exactly 0."""
    if isinstance(mask, tuple):  # sparse hit positions: no (B, K) comparison pass
        v.index_put_(mask, torch.tensor(torch.finfo(v.dtype).min, dtype=v.dtype))
    elif mask is not None:
        v.masked_fill_(mask, torch.finfo(v.dtype).min)


class SampledSoftmaxXent(torch.autograd.Function):
    """loss_b = logsumexp([u_b + alpha_b, v_b + beta_b]) - mean_t(u_bt + gamma_bt), u the true logits (B, T),
    v the sampled logits (B, K), masked entries of v set to finfo.min; backward by hand:
    dl/du = softmax_true - 1/T, dl/dv = softmax_sampled, then the chain rule to x, W rows and b entries.

    apply(x (B, d), W (C, d), b (C,) or None, true_ids (B, T), sampled_ids (K,) or (B, K),
          alpha (B, T), beta (K,) or (B, K), mask, gamma (B, T), reduction, sparse) -> loss
    mask: None, a (B, K) bool tensor, or a (rows, cols) pair of index tensors of the masked entries.
    """

    @staticmethod
    def forward(ctx, x, W, b, true_ids, sampled_ids, alpha, beta, mask, gamma, reduction, sparse):
        if b is not None:
            beta = beta + b[sampled_ids].to(alpha.dtype)  # (K,) or (B, K)
        Wt, Ws, u, v = gather(x, W, true_ids, sampled_ids, alpha.dtype, beta)  # v = x Ws^T + beta (B, K)
        if b is not None:
            u = u + b[true_ids].to(u.dtype)
        mask_(v, mask)
        ua = u + alpha  # (B, T)
        # softmax over v alone, fused (one read and one write of (B, K)), in place on the CPU; then its sum from
        # its largest entry: max_k pv = e^0 / s_v, so the log-sum-exp of v is m_v - log max pv
        m_v = v.amax(1, keepdim=True)  # (B, 1)
        pv = torch.ops.aten._softmax.out(v, 1, False, out=v) if v.device.type == "cpu" else torch.softmax(v, 1)
        lse_v = m_v - torch.log(pv.amax(1, keepdim=True))  # (B, 1); finfo.min when every entry is masked
        m = torch.maximum(lse_v, ua.amax(1, keepdim=True))  # (B, 1)
        ev = torch.exp(lse_v - m)  # (B, 1) the sampled block's share, times e^{lse - m}
        pu = torch.exp(ua - m)  # (B, T)
        s = ev + pu.sum(1, keepdim=True)  # (B, 1)
        loss = (m + torch.log(s)).squeeze(1) - (u + gamma).mean(1)  # (B,)
        # backward: softmax_v = pv * ev / s, folded into per-row factors, no extra pass over (B, K)
        ctx.save_for_backward(x, Wt, Ws, pu, pv, ev, s, true_ids, sampled_ids)
        ctx.meta = ((W.shape, W.dtype, None if b is None else b.dtype), reduction, sparse)
        if reduction == "mean":
            return loss.mean()
        return loss.sum() if reduction == "sum" else loss

    @staticmethod
    @once_differentiable  # no double backward: the saved softmax is not a function of the inputs
    def backward(ctx, grad_out):
        x, Wt, Ws, pu, pv, ev, s, true_ids, sampled_ids = ctx.saved_tensors
        w_meta, reduction, sparse = ctx.meta
        B, T = true_ids.shape
        scale = grad_out[:, None] if reduction == "none" else (grad_out / B if reduction == "mean" else grad_out)
        r = scale / s  # (B, 1)
        gu = (pu * r - scale / T).to(x.dtype)  # (B, T)  dl/du
        r = r * ev  # dl/dv_bk = pv_bk * r_b
        fold = sampled_ids.dim() == 1 and x.dtype == pv.dtype  # 16-bit inputs: G in x's dtype, r applied first
        G, rx = (pv, r.to(x.dtype)) if fold else ((pv * r).to(x.dtype), None)
        grads = candidate_grads(ctx.needs_input_grad, x, Wt, Ws, true_ids, sampled_ids, gu, G, rx, w_meta, sparse)
        return (*grads, None, None, None, None, None, None, None, None)


class CandidateLogits(torch.autograd.Function):
    """apply(x, W, b, true_ids, sampled_ids, cd, sparse) -> (u (B, T), v (B, K)): the candidates' logits in the
    compute dtype cd, bias included; the loss on top of them is ordinary autograd on (B, K) tensors."""

    @staticmethod
    def forward(ctx, x, W, b, true_ids, sampled_ids, cd, sparse):
        Wt, Ws, u, v = gather(x, W, true_ids, sampled_ids, cd, None if b is None else b[sampled_ids].to(cd))
        if b is not None:
            u = u + b[true_ids].to(cd)
        ctx.save_for_backward(x, Wt, Ws, true_ids, sampled_ids)
        ctx.meta = ((W.shape, W.dtype, None if b is None else b.dtype), sparse)
        return u, v

    @staticmethod
    @once_differentiable
    def backward(ctx, gu, gv):
        x, Wt, Ws, true_ids, sampled_ids = ctx.saved_tensors
        w_meta, sparse = ctx.meta
        gu = torch.zeros(true_ids.shape, dtype=x.dtype, device=x.device) if gu is None else gu.to(x.dtype)
        G = torch.zeros((x.shape[0], sampled_ids.shape[-1]), dtype=x.dtype, device=x.device) if gv is None \
            else gv.to(x.dtype)
        grads = candidate_grads(ctx.needs_input_grad, x, Wt, Ws, true_ids, sampled_ids, gu, G, None, w_meta, sparse)
        return (*grads, None, None, None, None)
