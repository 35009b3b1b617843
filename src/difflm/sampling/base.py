"""What every sampler shares: its output, the step callback and the guidance hook.

A sampler is a free function with one signature (k-diffusion style):

    sample(denoiser, shape, *, steps, generator=None, callback=None,
           guidance=None, **options) -> SampleOutput

`denoiser` is a `difflm.model.denoiser.Denoiser` (or anything with the same
`__call__`, `.schedule`, `.embedding` and `.self_conditioning`); `shape` is
(B, L, d); `steps` is K, the number of steps; `generator` is the source of all
randomness; `callback` is called with a `StepInfo` after each step; `guidance`
edits the new state x_s after each step but the last. `options` are the sampler's
own and those every sampler takes (`grid.COMMON_OPTIONS`: cond, temperature,
clamp_from, return_trajectory, progress; see `grid.walk`); an unknown option is
a ValueError that names it. Samplers never know which constraint a guidance
object enforces. Each sampler's docstring says only where it differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class SampleOutput:
    """Result of a sampler run.

    Attributes:
        x0: the final x̂0, [B, L, d].
        tokens: word ids rounded from x̂0, [B, L].
        trajectory: x_t after each step ([B, L, d] each) when requested.
        nfe: number of denoiser evaluations used per sample.
    """

    x0: torch.Tensor
    tokens: torch.Tensor
    trajectory: list[torch.Tensor] = field(default_factory=list)
    nfe: int = 0


@dataclass
class StepInfo:
    """Passed to a callback after each sampler step (a discrete run's: `tokens.StepReport`)."""

    step: int  # 0-based position in the sampling loop
    t: float  # time of the input x_t, in (0, 1]
    x: torch.Tensor  # the new state x_s, [B, L, d] (discrete: the row read, token ids [B, L])
    x0: torch.Tensor  # the x̂0 predicted at this step, [B, L, d] (discrete: one-hot words [B, L, V])


class Callback(Protocol):
    def __call__(self, info: StepInfo) -> None: ...


class Guidance(Protocol):
    """Edits the sampler's new state between steps (Diffusion-LM §5)."""

    def __call__(self, x: torch.Tensor, *, t: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Return an edited x_s given the Gaussian N(mean, std²) it was drawn from; t is the time of x_s."""
        ...
