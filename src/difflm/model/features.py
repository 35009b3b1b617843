"""Features of a time (or any scalar in [0, 1]) for a network's input."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of scale·t: [B] -> [B, dim] (as in DDPM / improved-diffusion)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimeMLP(nn.Sequential):
    """The Linear–SiLU–Linear MLP (H → inner → H) that embeds a time's features.

    A Sequential, so that its weights keep the names checkpoints store them under (0.weight, 2.weight).
    """

    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__(nn.Linear(hidden, inner), nn.SiLU(), nn.Linear(inner, hidden))
        self.hidden = hidden

    def embed(self, t: torch.Tensor, dtype: torch.dtype, scale: float = 1000.0) -> torch.Tensor:
        """The embedding, in `dtype`, of the sinusoidal features of scale·t, to add to every
        position: [B, 1, H] for t [B], [B, L, H] for a time per position t [B, L]."""
        if t.ndim == 1:
            return self(timestep_embedding(t, self.hidden, scale).to(dtype))[:, None, :]
        # A sweep's times sit on the training grid: embed each distinct time once.
        times, where = t.flatten().unique(return_inverse=True)
        return self(timestep_embedding(times, self.hidden, scale).to(dtype))[where].view(*t.shape, -1)
