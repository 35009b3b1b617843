"""The consistency-model parameterisation on the schedule's noise range (math only).

Notation (`difflm.objectives.consistency` has the full account): σ_min and σ_max the
schedule's least and most noisy trained levels in EDM form x = x0 + σ·ε; the Karras grid
σ_0 < … < σ_{N−1}; f(x, σ) = c_skip·x + c_out·x̂0 with c_skip = σ_min/σ, c_out = 1 − c_skip.
"""

from __future__ import annotations

import torch

from difflm.diffusion.paths import per_example, sigma_of_t
from difflm.diffusion.schedules import NoiseSchedule

#: ρ of the Karras grid of training.
RHO = 7.0


def sigma_range(schedule: NoiseSchedule) -> tuple[float, float]:
    """(σ_min, σ_max): the schedule's least and most noisy trained levels (t = 1/T and t = 1)."""
    t = torch.tensor([1 / schedule.num_steps, 1.0], dtype=torch.float64)
    low, high = sigma_of_t(schedule, t).tolist()
    return low, high


def karras_sigmas(schedule: NoiseSchedule, num_scales: int) -> torch.Tensor:
    """σ_0 < … < σ_{N−1} from σ_min to σ_max, float64 [N]."""
    low, high = sigma_range(schedule)
    ramp = torch.linspace(0, 1, num_scales, dtype=torch.float64)
    return (low ** (1 / RHO) + ramp * (high ** (1 / RHO) - low ** (1 / RHO))) ** RHO


def combine(x: torch.Tensor, x0_hat: torch.Tensor, sigma: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """f = c_skip·x + c_out·x̂0 with c_skip = σ_min/σ, c_out = 1 − c_skip, for σ [B]."""
    c_skip = per_example(sigma_min / sigma, x)
    return c_skip * x + (1 - c_skip) * x0_hat
