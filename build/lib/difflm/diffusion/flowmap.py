"""The rectified-flow path and its flow map read from an x̂0 network (shortcut models, MeanFlow).

Notation (Frans et al. 2024; Geng et al. 2025; fast-samplers notes §3–4):

    s ∈ [0, 1]   path time: s = 0 data, s = 1 the noisiest level the schedule trains (t = 1)
    τ = τ_max·s  the RF level, τ_max = τ(t = 1) < 1 (paths.tau_of_t): the path stays inside
                 the schedule's range at the noisy end, and every s maps to one time t
    x_s          (1 − τ_max·s)·x0 + τ_max·s·ε
    v            dx_s/ds = τ_max·(ε − x0), the conditional velocity
    r < s        the end of a jump from s; its length s − r is the network's `jump` input
    x̂0           the network's prediction f(x_s, s, s − r)
    u            the average velocity over [r, s]: x_r = x_s − (s − r)·u

The x0-adapter (notes §4, as in FLM) reads u from x̂0 as u = (x_s − x̂0)/s, so a jump is

    x_r = (r/s)·x_s + (1 − r/s)·x̂0                   (deterministic DDIM, written for RF)

and a jump to r = 0 lands on x̂0. The word logits behind x̂0 keep the cross-entropy
and rounding terms of the diffusion objective meaningful for these models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from difflm.diffusion.paths import Network, denoise_rf, per_example, rf_to_vp, tau_of_t
from difflm.diffusion.schedules import NoiseSchedule


@dataclass(frozen=True)
class FlowPath:
    """The RF path of a schedule, in path time s.

    Attributes:
        schedule: the noise schedule the network's time input follows.
        tau_max: τ at s = 1.
    """

    schedule: NoiseSchedule
    tau_max: float

    @classmethod
    def of(cls, schedule: NoiseSchedule) -> FlowPath:
        return cls(schedule, float(tau_of_t(schedule, torch.tensor(1.0, dtype=torch.float64))))

    def point(self, x0: torch.Tensor, eps: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x_s = (1 − τ_max·s)·x0 + τ_max·s·ε for s [B]."""
        tau = per_example(self.tau_max * s, x0)
        return (1 - tau) * x0 + tau * eps

    def velocity(self, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """v = dx_s/ds = τ_max·(ε − x0)."""
        return self.tau_max * (eps - x0)

    def start(self, noise: torch.Tensor) -> torch.Tensor:
        """x_1 for the VP state x_T = ε that every sampler starts from (the x0 part, √ᾱ_{T−1}·x0, is dropped)."""
        scale, _ = rf_to_vp(self.schedule, torch.tensor([self.tau_max], dtype=torch.float64))
        return noise * float(scale)

    def to_vp(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_vp, t): the VP point and schedule time of x_s, s [B] (for guidance)."""
        scale, t = rf_to_vp(self.schedule, self.tau_max * s)
        return x / per_example(scale, x), t

    def from_vp(self, x_vp: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_vp`'s first output."""
        scale, _ = rf_to_vp(self.schedule, self.tau_max * s)
        return x_vp * per_example(scale, x_vp)

    def predict(self, denoiser: Network, x: torch.Tensor, s: torch.Tensor, jump: torch.Tensor, **kwargs: Any) -> Any:
        """f(x_s, s, jump): the prediction that serves the jump from s to s − jump."""
        return denoise_rf(denoiser, x, self.tau_max * s, jump=jump, **kwargs)


def jump(x: torch.Tensor, x0_hat: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """x_r = (r/s)·x_s + (1 − r/s)·x̂0, for s, r [B] with 0 ≤ r ≤ s."""
    ratio = per_example(r / s, x)
    return ratio * x + (1 - ratio) * x0_hat


def average_velocity(x: torch.Tensor, x0_hat: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """u = (x_s − x̂0)/s, the average velocity the prediction implies over any jump from s."""
    return (x - x0_hat) / per_example(s, x)
