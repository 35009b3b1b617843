"""One x̂0 network, three ways to write a noisy point: VP (the schedule), rectified flow, EDM.

Notation (fast-samplers notes §0; Karras et al. 2022 for EDM, Liu et al. 2023 for RF):

    x0          clean embeddings, [B, L, d]; ε standard normal noise
    ᾱ, t        VP: x = √ᾱ·x0 + √(1 − ᾱ)·ε, the schedule's ᾱ(t); the denoiser is f(x_vp, t)
    λ           log-SNR, log(ᾱ/(1 − ᾱ))
    τ           rectified flow: x = (1 − τ)·x0 + τ·ε
    σ           EDM: x = x0 + σ·ε

Points of equal SNR are the same point up to scale, so any of them is fed to the network
as the VP point of the same λ, at the time t(λ) the schedule inverts:

    RF → VP:   x_vp = x/√((1 − τ)² + τ²),   λ = 2·log((1 − τ)/τ)
    EDM → VP:  x_vp = x/√(1 + σ²),          λ = −2·log σ

x0 has coefficient 1 at the clean end of all three, so the network's x̂0 needs no
conversion back. Everything here is differentiable in x, τ and σ (MeanFlow takes a
Jacobian-vector product through it).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from difflm.diffusion.schedules import NoiseSchedule


class Network(Protocol):
    """What the path views need of an x̂0 network (`difflm.model.denoiser.Denoiser`): its
    schedule, and a call at a VP point (x_t, t) that returns its prediction."""

    schedule: NoiseSchedule

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> Any: ...


def per_example(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] in like's dtype, to scale like [B, L, d]."""
    return value.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def tau_of_t(schedule: NoiseSchedule, t: torch.Tensor | float) -> torch.Tensor:
    """τ = √(1 − ᾱ)/(√ᾱ + √(1 − ᾱ)), the RF level of schedule time t."""
    abar = schedule.alpha_bar(t)
    return (1 - abar).sqrt() / (abar.sqrt() + (1 - abar).sqrt())


def sigma_of_t(schedule: NoiseSchedule, t: torch.Tensor | float) -> torch.Tensor:
    """σ = √((1 − ᾱ)/ᾱ), the EDM level of schedule time t."""
    abar = schedule.alpha_bar(t)
    return ((1 - abar) / abar).sqrt()


def rf_to_vp(schedule: NoiseSchedule, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, t) of the RF level τ [B]: the VP point is x/scale, at schedule time t."""
    return ((1 - tau) ** 2 + tau**2).sqrt(), schedule.t_from_log_snr(2 * (torch.log1p(-tau) - torch.log(tau)))


def edm_to_vp(schedule: NoiseSchedule, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, t) of the EDM level σ [B]: the VP point is x/scale, at schedule time t."""
    return (1 + sigma**2).sqrt(), schedule.t_from_log_snr(-2 * torch.log(sigma))


def denoise_rf(denoiser: Network, x: torch.Tensor, tau: torch.Tensor, **kwargs: Any) -> Any:
    """The network's prediction at the RF point x = (1 − τ)·x0 + τ·ε, τ [B] in (0, 1).

    Extra keyword arguments (jump, cond) go to the denoiser unchanged.
    """
    scale, t = rf_to_vp(denoiser.schedule, tau)
    return denoiser(x / per_example(scale, x), t, **kwargs)


def denoise_edm(denoiser: Network, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> Any:
    """The network's prediction at the EDM point x = x0 + σ·ε, σ [B] > 0."""
    scale, t = edm_to_vp(denoiser.schedule, sigma)
    return denoiser(x / per_example(scale, x), t, **kwargs)
