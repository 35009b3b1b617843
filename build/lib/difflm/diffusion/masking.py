"""The absorbing-state (masked) forward process of masked diffusion (MDLM, Sahoo et al. 2024).

Notation: x a row of word ids [B, L]; m the mask, an id one past the vocabulary (V); z_t the
row at time t ∈ [0, 1]; α_t the share of tokens still visible. With MDLM's log-linear
schedule α_t = 1 − t:

    q(z_t,i | x_i) = α_t·[z_t,i = x_i] + (1 − α_t)·[z_t,i = m]        each position alone

and for s < t a masked position is revealed with probability (α_s − α_t)/(1 − α_t) = (t − s)/t,
a visible one stays. The continuous-time NELBO (MDLM eq. 11, SUBS parameterization: a visible
token is its own prediction and m is never predicted) is

    −log p(x) ≤ E_{t ~ U(0, 1)} (1/t)·Σ_{i: z_t,i = m} −log p_θ(x_i | z_t)

Summed over the masks of each size k, the weight 1/t integrates to 1/k per mask of k
positions, so the bound equals the any-order autoregressive NLL averaged over orders; with
the exact conditionals every order gives −log p(x) itself (tested).
"""

from __future__ import annotations

import torch


def visible_share(t: torch.Tensor) -> torch.Tensor:
    """α_t = 1 − t (log-linear)."""
    return 1 - t


def mask_rows(
    ids: torch.Tensor, t: torch.Tensor, u: torch.Tensor, maskable: torch.Tensor, mask_id: int
) -> torch.Tensor:
    """z_t ~ q(z_t | x) from uniforms u [B, L]: each maskable position [B, L] of ids [B, L]
    masked when u < 1 − α_t, t [B]."""
    masked = maskable & (u < (1 - visible_share(t))[:, None])
    return torch.where(masked, mask_id, ids)


def reveal_prob(t: float, s: float) -> float:
    """The probability that a position masked at t is visible at s < t: (α_s − α_t)/(1 − α_t)."""
    return (t - s) / t
