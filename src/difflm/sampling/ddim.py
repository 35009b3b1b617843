"""DDIM sampling (Song et al. 2021, eq. 12 and 16) on a respaced grid, for an x̂0 network.

Notation (as in diffusers' scheduling_ddim.py):

    x_t, x_s    current state and the next, less noisy one (s < t; s = -1 is x0)
    ᾱ_t, ᾱ_s    their signal levels
    x̂0, ε̂       the denoiser's estimate of x0 and the noise it implies
    σ_t(η)      η·√β̃, the step's noise scale; η = 0 is deterministic DDIM, η = 1 ancestral DDPM
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from difflm.diffusion.process import eps_from_x0, posterior_variance
from difflm.sampling.base import Callback, Guidance, SampleOutput
from difflm.sampling.grid import WALK_OPTIONS, check_options, walk

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def update(
    x0_hat: torch.Tensor, x_t: torch.Tensor, abar_t: float, abar_s: float, *, eta: float
) -> tuple[torch.Tensor, float]:
    """One DDIM step: the mean and σ_t(η) of x_s.

    Returns:
        (√ᾱ_s·x̂0 + √(1 − ᾱ_s − σ²)·ε̂, σ); x_s = mean + σ·z.
    """
    # 1. the noise ε̂ implied by x̂0 at x_t (eq. 12 needs it for the direction to x_t)
    eps_hat = eps_from_x0(x0_hat, x_t, abar_t)
    # 2. σ_t(η) = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s), eq. 16
    sigma = eta * posterior_variance(abar_t, abar_s) ** 0.5
    # 3. "direction pointing to x_t"; max(·, 0) absorbs rounding when η = 1 and ᾱ_s → 1
    direction = max(1 - abar_s - sigma**2, 0.0) ** 0.5 * eps_hat
    # 4. x_s without its random part
    mean = abar_s**0.5 * x0_hat + direction
    return mean, sigma


def check_eta(eta: object) -> float:
    """η as a float; ValueError unless it is a number in [0, 1]."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    return float(eta)


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
    """Sample with K = `steps` DDIM steps.

    Args (the others as in `base`):
        steps: K, 1 ≤ K ≤ T.
        **options: eta ∈ [0, 1] (default 0), and grid, cond, temperature, clamp_from,
            return_trajectory, progress (see `grid.walk`).

    Raises:
        ValueError: an unknown option, η outside [0, 1], or a bad value.
    """
    check_options(options, (*WALK_OPTIONS, "eta"))
    rule = partial(update, eta=check_eta(options.pop("eta", 0.0)))
    return walk(
        rule, denoiser, shape, steps=steps, generator=generator, callback=callback, guidance=guidance, **options
    )
