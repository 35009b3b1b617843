"""Ancestral DDPM sampling (Ho et al. 2020, Alg. 2) on a respaced grid, for an x̂0 network.

Notation (see `difflm.diffusion.process`):

    x_t, x_s    current state and the next, less noisy one (s < t; s = -1 is x0)
    ᾱ_t, ᾱ_s    their signal levels
    x̂0          the denoiser's estimate of x0 at x_t
    μ̃, β̃        mean and variance of the posterior q(x_s | x_t, x0 = x̂0)

Each step draws x_s ~ N(μ̃, β̃), the fixed "small" variance; on a respaced grid β_t
becomes β_{t|s} = 1 − ᾱ_t/ᾱ_s (improved-diffusion's respacing). The step onto x0 has
β̃ = 0, so the sample ends on x̂0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from difflm.diffusion.process import posterior_between
from difflm.sampling.base import Callback, Guidance, SampleOutput
from difflm.sampling.grid import WALK_OPTIONS, check_options, walk

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def update(x0_hat: torch.Tensor, x_t: torch.Tensor, abar_t: float, abar_s: float) -> tuple[torch.Tensor, float]:
    """One ancestral step: (μ̃, √β̃) of q(x_s | x_t, x̂0) (DDPM eq. 7)."""
    mean, variance = posterior_between(x0_hat, x_t, abar_t, abar_s)
    return mean, variance**0.5


def sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    **options: Any,
) -> SampleOutput:
    """Sample with K = `steps` ancestral DDPM steps.

    Args (the others as in `base`):
        steps: K, 1 ≤ K ≤ T.
        **options: grid, cond, temperature, clamp_from, return_trajectory, progress (see `grid.walk`).

    Raises:
        ValueError: an unknown option or a bad value.
    """
    check_options(options, WALK_OPTIONS)
    return walk(
        update, denoiser, shape, steps=steps, generator=generator, callback=callback, guidance=guidance, **options
    )
