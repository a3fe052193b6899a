"""Walker's alias table: O(1) draws from an explicit proposal q over C classes (samplers.ProbsSampler)."""

from __future__ import annotations

import torch


def alias_table(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Walker's alias table for q (float64, (C,)), built without a Python loop over classes.

    Vose's sweep, vectorised with prefix sums. Scaled masses s = C q split into lights (s < 1, deficit
    1 - s) and heavies (s >= 1, surplus s - 1). The sweep serves lights in order from the current heavy,
    which it keeps while its residual mass is >= 1; a heavy whose residual r drops below 1 fills its own
    bucket (threshold r) and takes 1 - r from the next heavy. With E_i = the summed deficits of the lights
    before light i and U_j = the summed surpluses of heavies 1..j:
      light i is served by heavy j(i) = min{j : U_j >= E_i}                      (its alias);
      heavy j closes at X_j = the first light boundary E > U_j, with residual r_j = U_j - X_j + 1.
    Bucket k is chosen uniformly; it returns k with probability prob[k], else alias[k].
    """
    C = q.numel()
    s = q * C
    prob = torch.ones(C, dtype=torch.float64, device=q.device)
    alias = torch.arange(C, device=q.device)
    light = s < 1.0
    L = torch.nonzero(light).squeeze(1)
    H = torch.nonzero(~light).squeeze(1)
    if L.numel() == 0 or H.numel() == 0:  # all s == 1: uniform
        return prob, alias
    d = 1.0 - s[L]
    E_end = torch.cumsum(d, 0)  # (a,) end of each light's deficit
    E = E_end - d  # (a,) start
    U = torch.cumsum(s[H] - 1.0, 0)  # (b,)
    j_of_i = torch.searchsorted(U, E, side="left").clamp_(max=H.numel() - 1)
    prob[L] = s[L]
    alias[L] = H[j_of_i]
    bounds = torch.cat([E.new_zeros(1), E_end])  # (a + 1,) light boundaries in the lights-only axis
    k = torch.searchsorted(bounds, U, side="right")  # first boundary > U_j
    has = k < bounds.numel()
    X = bounds[k.clamp(max=bounds.numel() - 1)]
    r = torch.where(has, (U - X + 1.0).clamp(0.0, 1.0), torch.ones_like(U))
    r[-1] = 1.0  # the last heavy keeps the rest of the mass (exactly 1 up to roundoff)
    prob[H] = r
    alias[H[:-1]] = H[1:]
    return prob, alias
