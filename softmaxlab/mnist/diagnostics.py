"""Training diagnostics of a run with --diagnostics: why a deep narrow net sits on a plateau, then escapes.

Every DIAG_EVERY steps of an epoch (and at its last step) a run records a DiagPoint:
  loss       the mean training loss over the steps since the previous point of this epoch (`window` of them);
  grad_norm  per layer (hidden layers, then the head), the Frobenius norm of that step's batch gradient of the
             weights, dL/dW_l = G_l^T A_l (mean loss over the batch), before the step's update;
  dead       per hidden layer, the fraction of its units that are dead after that step's update: a unit is
             dead when its ReLU output is 0 for every one of the PROBE fixed probe images (the first PROBE
             validation images, the same for every point and every run), so no probe image sends it a gradient.

The gradient norms come from the training step itself (engine.Engine.step(grad_norms=...)), not a separate probe
backward: the step never forms dW (its SGD update is fused into the GEMM), but ||G^T A||_F^2 = sum((G G^T) *
(A A^T)) needs only two (B, B) Gram matrices, which costs a few percent of a step at batch 64, where a probe
backward over 1,000 images would cost about a third of the 50 steps between points.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

DIAG_EVERY = 50  # steps between points (782 steps per epoch at batch 64: 15 points and a 32-step tail)
PROBE = 1_000  # validation images of the dead-unit probe


@dataclass(frozen=True)
class DiagPoint:
    step: int  # steps done in the run, 1-based, counting earlier epochs
    epoch: int  # 1-based
    window: int  # steps the loss is the mean of
    loss: float  # mean training loss (nats) over the window
    dead: tuple[float, ...]  # per hidden layer: fraction of dead units on the probe, after this step's update
    grad_norm: tuple[float, ...]  # per layer (head last): ||dL/dW||_F of this step's batch, before its update


def weight_grad_norm(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """||g^T a||_F without forming g^T a: g (B, out) the gradient at a layer's output, a (B, in) its input.

    ||g^T a||_F^2 = sum_ij (g g^T)_ij (a a^T)_ij, two (B, B) Gram matrices, in float64 (a 0-d tensor)."""
    g, a = g.double(), a.double()
    return ((g @ g.t()) * (a @ a.t())).sum().clamp_min(0).sqrt()


@torch.no_grad()
def dead_fractions(W: list[torch.Tensor], b: list[torch.Tensor], x: torch.Tensor) -> list[float]:
    """Per hidden layer, the fraction of units whose ReLU output is 0 on every row of x (N, in).

    W[l] (out, in), b[l] (1, out): the MLP's layers, the head last (it has no ReLU, so it is not counted)."""
    out, h = [], x
    for Wl, bl in zip(W[:-1], b[:-1]):
        h = torch.addmm(bl, h, Wl.t()).relu_()  # (N, out)
        out.append(float((h.amax(0) == 0).double().mean()))
    return out


class Recorder:
    """The points of one run: train.py asks `due` before each step and calls `record` after a due one."""

    def __init__(self, probe: torch.Tensor, n_layers: int, points: list[dict] | None = None):
        self.probe = probe  # (PROBE, 784) float pixels, as the engine sees them
        self.norms = torch.zeros(n_layers, dtype=torch.float64, device=probe.device)  # filled by the step
        self.points = list(points or [])  # DiagPoint dicts (JSON, checkpoints)

    def due(self, s: int, steps: int) -> torch.Tensor | None:
        """The buffer step s (0-based, of `steps` this epoch) writes its gradient norms to, if it is a point."""
        return self.norms if (s + 1) % DIAG_EVERY == 0 or s + 1 == steps else None

    def record(self, eng, epoch: int, s: int, steps: int, losses: torch.Tensor) -> None:
        window = (s % DIAG_EVERY) + 1  # back to the previous point of this epoch
        p = DiagPoint(step=epoch * steps + s + 1, epoch=epoch + 1, window=window,
                      loss=losses[s + 1 - window:s + 1].double().mean().item(),
                      dead=tuple(dead_fractions(eng.W, eng.b, self.probe)), grad_norm=tuple(self.norms.tolist()))
        self.points.append(dataclasses.asdict(p))
