"""Noise schedules: the discrete ᾱ_i of training and the continuous ᾱ(t) of sampling.

Notation (DDPM, Ho et al. 2020; Diffusion-LM, Li et al. 2022):

    T           num_steps, the number of training steps
    i           training index in 0..T-1; the denoiser sees it at time t = (i+1)/T
    β_i         betas[i], the variance added by step i
    ᾱ_i         alphas_cumprod[i] = ∏_{j≤i} (1 − β_j), the signal level at t = (i+1)/T
    ᾱ(t)        continuous signal level, t ∈ [0, 1], ᾱ(0) = 1 (clean data)
    λ(t)        log-SNR, log(ᾱ / (1 − ᾱ))
    x_t         √ᾱ(t)·x0 + √(1 − ᾱ(t))·ε

Schedules defined by a continuous ᾱ(t) (`sqrt`, `cosine`) are discretized as
β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), 0.999); the clip keeps the last step from
destroying the signal completely (ᾱ(1) ≤ 0 for `sqrt`, = 0 for `cosine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

MAX_BETA = 0.999


# eq=False: the fields are tensors, whose == is elementwise, so a generated
# __eq__ would fail; identity comparison is the honest one.
@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete variance schedule and its piecewise-linear continuous extension.

    Attributes:
        name: the schedule's name in `make_schedule`.
        num_steps: T.
        betas: β_i, float64 [T].
        alphas_cumprod: ᾱ_i = ∏_{j≤i}(1 − β_j), float64 [T]; ᾱ_i is the signal
            level at time t = (i+1)/T.
    """

    name: str
    num_steps: int
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def __post_init__(self) -> None:
        for field_name in ("betas", "alphas_cumprod"):
            value = getattr(self, field_name)
            if value.shape != (self.num_steps,):
                raise ValueError(f"{field_name} must have shape ({self.num_steps},), got {tuple(value.shape)}")

    def _grid(self, like: torch.Tensor) -> torch.Tensor:
        """ᾱ on the grid t_k = k/T, k = 0..T: (1, ᾱ_0, ..., ᾱ_{T-1}), float64 [T+1]."""
        acp = self.alphas_cumprod.to(device=like.device, dtype=torch.float64)
        return torch.cat([acp.new_ones(1), acp])

    def alpha_bar(self, t: torch.Tensor | float) -> torch.Tensor:
        """ᾱ(t), linear between grid points k/T and exact on them.

        Args:
            t: times in [0, 1], any shape.

        Returns:
            ᾱ(t), same shape, device and (floating) dtype as `t`.
        """
        t = _as_float_tensor(t)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"t must lie in [0, 1], got values in [{t.min().item()}, {t.max().item()}]")
        grid = self._grid(t)
        u = t.to(torch.float64) * self.num_steps
        # The last interval is closed on the right so that t = 1 maps to k = T-1, frac = 1.
        k = u.floor().clamp(max=self.num_steps - 1).long()
        frac = u - k
        return (grid[k] + frac * (grid[k + 1] - grid[k])).to(t.dtype)

    def log_snr(self, t: torch.Tensor | float) -> torch.Tensor:
        """λ(t) = log(ᾱ / (1 − ᾱ)); +inf at t = 0."""
        t = _as_float_tensor(t)
        abar = self.alpha_bar(t.to(torch.float64))
        return (abar.log() - (-abar).log1p()).to(t.dtype)

    def t_from_log_snr(self, lam: torch.Tensor | float) -> torch.Tensor:
        """The exact inverse of `log_snr`: the t in [0, 1] with λ(t) = lam.

        ᾱ = sigmoid(λ) is found between two grid values and the linear piece is
        inverted; λ above λ(0) = +inf cannot occur, λ below λ(1) maps to t = 1.
        """
        lam = _as_float_tensor(lam)
        abar = torch.sigmoid(lam.to(torch.float64))
        grid = self._grid(lam)
        # ᾱ decreases along the grid; search the increasing reversed copy.
        ascending = grid.flip(0)
        pos = torch.searchsorted(ascending, abar, right=False)  # ascending[pos-1] < ᾱ ≤ ascending[pos]
        k = (self.num_steps - pos).clamp(0, self.num_steps - 1)  # grid[k] ≥ ᾱ ≥ grid[k+1]
        hi, lo = grid[k], grid[k + 1]
        frac = ((hi - abar) / (hi - lo)).clamp(0, 1)
        return ((k + frac) / self.num_steps).to(lam.dtype)

    def time_of(self, i: torch.Tensor | int) -> torch.Tensor:
        """t = (i+1)/T, the time the denoiser is given for training index i.

        Returns:
            a float tensor (the default dtype) on `i`'s device.
        """
        i = torch.as_tensor(i)
        return (i.to(torch.float64) + 1).div(self.num_steps).to(torch.get_default_dtype())


def _as_float_tensor(x: torch.Tensor | float) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _sqrt_alpha_bar(t: float) -> float:
    """Diffusion-LM (Li et al. 2022, App. A): ᾱ(t) = 1 − √(t + s), s = 1e-4."""
    return 1 - math.sqrt(t + 1e-4)


def _cosine_alpha_bar(t: float) -> float:
    """Nichol & Dhariwal (2021) eq. 17 without the f(0) normalizer (it cancels in β_i)."""
    s = 0.008
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def _betas_from_alpha_bar(alpha_bar: Callable[[float], float], num_steps: int) -> torch.Tensor:
    """β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), 0.999), float64 [T]."""
    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), MAX_BETA) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def _linear_betas(num_steps: int) -> torch.Tensor:
    """improved-diffusion's linear schedule, rescaled so that any T spans the same noise as T = 1000.

    For T ≤ 20 the end value 0.02·1000/T reaches 1, so β is clipped like the others.
    """
    scale = 1000 / num_steps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


_BETAS: dict[str, Callable[[int], torch.Tensor]] = {
    "sqrt": lambda T: _betas_from_alpha_bar(_sqrt_alpha_bar, T),
    "cosine": lambda T: _betas_from_alpha_bar(_cosine_alpha_bar, T),
    "linear": _linear_betas,
}


def make_schedule(name: str, num_steps: int) -> NoiseSchedule:
    """Build a named schedule with T = `num_steps` steps.

    Args:
        name: "sqrt" (Diffusion-LM), "cosine" (Nichol & Dhariwal) or "linear" (DDPM,
            rescaled by 1000/T as in improved-diffusion).
        num_steps: T ≥ 2.

    Raises:
        ValueError: unknown name or T < 2.
    """
    if name not in _BETAS:
        raise ValueError(f"unknown noise schedule {name!r}; valid choices: {', '.join(sorted(_BETAS))}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an integer ≥ 2, got {num_steps!r}")
    betas = _BETAS[name](num_steps)
    return NoiseSchedule(name=name, num_steps=num_steps, betas=betas, alphas_cumprod=torch.cumprod(1 - betas, 0))
