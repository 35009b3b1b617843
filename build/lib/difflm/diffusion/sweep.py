"""Left-to-right noise (AR-Diffusion, Wu et al. 2023, arXiv 2305.09515).

Each position gets its own time on a line that sweeps from left to right. A clock
u ∈ [0, 1 + λ] (λ the lag) sets position i's time

    t_i(u) = clip(u − λ·(1 − p_i), 0, 1),      p_i = min(i / s, 1)

where s is the row's span: its END position under length anchors (so the sweep runs over
the row's words), else L − 1 of the model. At u = 1 + λ every position is pure noise and at
u = 0 every one is clean; in between, a position is cleaner than the one to its right by
λ·Δp, so the words on the left settle first and the ones to their right are written
knowing them. λ = 0 is ordinary diffusion's shared t.
"""

from __future__ import annotations

import torch


def sweep_times(u: torch.Tensor, span: torch.Tensor, width: int, lag: float) -> torch.Tensor:
    """t_i(u) for clocks u [B] and spans s [B] (≥ 1) over `width` positions -> [B, width] in [0, 1]."""
    if lag < 0:
        raise ValueError(f"the sweep's lag λ must be ≥ 0, got {lag}")
    positions = torch.arange(width, device=u.device, dtype=torch.float32)
    p = (positions[None, :] / span[:, None].float()).clamp(max=1.0)
    return (u[:, None].float() - lag * (1 - p)).clamp(0.0, 1.0)
