"""Problem 1's answers as formulas (LaTeX), one source for the report and for docs/derivations.md.

The report renders each formula (MathML in report.html, `$...$` in report.md); docs/derivations.md carries the
same strings in its "Answers" section, which `python scripts/derivations_answers.py`
regenerates and tests/test_answers.py compares. `source_gradient_error` measures what the source's Q1 answer
gets wrong, on a random problem, against torch.autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Formula:
    latex: str
    text: str  # the same in plain text, for a one-line answer (and for pdftotext)


# ---- Problem 1 Q1: full softmax, l = -log p_c, p = softmax(z), z_i = w_i . x + b_i -----------------------------

Q1_DZ = Formula(r"\frac{\partial \ell}{\partial z_i} = p_i - \mathbf{1}[i=c]", "∂l/∂z_i = p_i − 1[i = c]")
Q1_DW = Formula(r"\frac{\partial \ell}{\partial w_i} = (p_i - \mathbf{1}[i=c])\, x, \qquad "
                r"\frac{\partial \ell}{\partial b_i} = p_i - \mathbf{1}[i=c]",
                "∂l/∂w_i = (p_i − 1[i = c]) x and ∂l/∂b_i = p_i − 1[i = c]")
Q1_CASES = Formula(r"i = c:\; \frac{\partial \ell}{\partial w_c} = (p_c - 1)\, x, \quad "
                   r"\frac{\partial \ell}{\partial b_c} = p_c - 1; \qquad i \ne c:\; "
                   r"\frac{\partial \ell}{\partial w_i} = p_i\, x, \quad \frac{\partial \ell}{\partial b_i} = p_i",
                   "for the true class (i = c) ∂l/∂w_c = (p_c − 1) x and ∂l/∂b_c = p_c − 1; for every other class "
                   "∂l/∂w_i = p_i x and ∂l/∂b_i = p_i")
Q1_BATCH = Formula(r"\nabla_W \ell = (p - e_c)\, x^\top \in \mathbb{R}^{C \times d}, \qquad "
                   r"\nabla_b \ell = p - e_c \in \mathbb{R}^{C}",
                   "∇_W l = (p − e_c) xᵀ, a C × d matrix; ∇_b l = p − e_c, a C-vector")

# ---- Problem 1 Q2: sampled softmax as posed; S = (s_1..s_K) drawn from q' (q without c), n_j = #j in S -------

Q2_D = Formula(r"\hat D = e^{z_c} + \frac{1}{K} \sum_{k=1}^{K} q_{s_k} e^{z_{s_k}}, \qquad "
               r"\hat\ell = \log \hat D - z_c",
               "D̂ = e^(z_c) + (1/K) Σ_k q_(s_k) e^(z_(s_k)) and l̂ = log D̂ − z_c")
Q2_P = Formula(r"\hat p_c = \frac{e^{z_c}}{\hat D}, \qquad \hat p_j = \frac{n_j\, q_j\, e^{z_j}}{K \hat D} "
               r"\quad (j \in S)", "p̂_c = e^(z_c) / D̂ and p̂_j = n_j q_j e^(z_j) / (K D̂) for a sampled class j")
Q2_GRAD = Formula(r"\frac{\partial \hat\ell}{\partial w_c} = (\hat p_c - 1)\, x, \quad "
                  r"\frac{\partial \hat\ell}{\partial b_c} = \hat p_c - 1; \qquad "
                  r"\frac{\partial \hat\ell}{\partial w_j} = \hat p_j\, x, \quad "
                  r"\frac{\partial \hat\ell}{\partial b_j} = \hat p_j \;(j \in S); \qquad 0 \text{ otherwise}",
                  "∂l̂/∂w_c = (p̂_c − 1) x and ∂l̂/∂b_c = p̂_c − 1; ∂l̂/∂w_j = p̂_j x and ∂l̂/∂b_j = p̂_j for a "
                  "sampled class j; 0 for a class neither true nor sampled")
Q2_BIAS = Formula(r"\mathbb{E}[\hat D] = e^{z_c} + \sum_{j \ne c} q_j q'_j e^{z_j} \ne Z, \qquad "
                  r"q'_j = \frac{q_j}{1 - q_c}",
                  "E[D̂] = e^(z_c) + Σ_(j≠c) q_j q'_j e^(z_j), not Z")
Q2_FIX = Formula(r"\hat D = e^{z_c} + \frac{1}{K} \sum_{k=1}^{K} \frac{e^{z_{s_k}}}{q'_{s_k}}, \qquad "
                 r"\hat p_j = \frac{n_j\, e^{z_j}}{K q'_j \hat D}, \qquad \mathbb{E}[\hat D] = Z",
                 "D̂ = e^(z_c) + (1/K) Σ_k e^(z_(s_k)) / q'_(s_k), whose mean is Z")

ANSWERS = {"Problem 1 Q1": (Q1_DZ, Q1_DW, Q1_CASES, Q1_BATCH), "Problem 1 Q2": (Q2_D, Q2_P, Q2_GRAD, Q2_BIAS, Q2_FIX)}

# ---- what the source wrote ---------------------------------------------------------------------------------

SOURCE_Q1 = Formula(r"\frac{\partial \ell}{\partial w_i} = -\log p_i \cdot x \cdot p_i (1 - p_i)",
                    "∂l/∂w_i = −log p_i · x · p_i (1 − p_i)")
SOURCE_Q2 = Formula(r"\hat D = e^{z_c} + \frac{1}{K} \sum_{k=1}^{K} q_{s_k} e^{z_{s_k}}",
                    "D̂ = e^(z_c) + (1/K) Σ_k q_(s_k) e^(z_(s_k)) (each draw weighted by q)")
SOURCES = (SOURCE_Q1, SOURCE_Q2)


@dataclass(frozen=True)
class GradientError:
    """The source's Q1 gradient against torch.autograd on one random problem (float64)."""

    classes: int
    dim: int
    rel_err: float  # |g_source - g| / |g| over the whole (C, d) gradient
    cosine: float  # between the two (C, d) gradients, flattened
    true_row_cosine: float  # the true class's row alone


def source_gradient_error(classes: int = 10, dim: int = 784, seed: int = 0) -> GradientError:
    """The source's dl/dW = -log p_i x p_i (1 - p_i) (every row) against autograd's, one example."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(classes, dim, generator=g, dtype=torch.float64) * dim ** -0.5).requires_grad_()
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    x = torch.rand(dim, generator=g, dtype=torch.float64)
    c = int(torch.randint(classes, (1,), generator=g))
    loss = -torch.log_softmax(W @ x + b, 0)[c]
    (true,) = torch.autograd.grad(loss, W)  # (C, d)
    p = torch.softmax((W @ x + b).detach(), 0)
    src = (-torch.log(p) * p * (1 - p))[:, None] * x[None, :]  # (C, d)
    cos = lambda u, v: float(u.flatten() @ v.flatten() / (u.norm() * v.norm()))
    return GradientError(classes, dim, float((src - true).norm() / true.norm()), cos(src, true),
                         cos(src[c], true[c]))
