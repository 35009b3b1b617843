"""MeanFlow sampling (Geng et al. 2025): K jumps with the average velocity, x_r = x_s − (s − r)·u.

One step is x = x_1 − u(x_1, 0, 1), which with the x0-adapter is the network's x̂0 at pure
noise with jump 1. Any K ≥ 1 works (the jump input is continuous); the grid is uniform in
the path time s. See `difflm.objectives.meanflow` for the model and `sampling.jumps` for the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from difflm.sampling.base import Callback, Guidance, SampleOutput
from difflm.sampling.grid import COMMON_OPTIONS, check_options, check_step_count
from difflm.sampling.jumps import jump_walk, uniform_grid

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    **options,
) -> SampleOutput:
    """Sample with K = `steps` equal jumps from s = 1 to s = 0.

    Args (the others as in `base`; a step is a jump):
        denoiser: a network trained with `model.generator=meanflow`.
        steps: K ≥ 1.
        generator: source of x_T.
        **options: cond, temperature, clamp_from, return_trajectory, progress (see `jumps.jump_walk`).

    Raises:
        ValueError: K < 1, or an unknown option.
    """
    check_options(options, COMMON_OPTIONS)
    check_step_count(steps)
    return jump_walk(
        denoiser, shape, uniform_grid(steps), generator=generator, callback=callback, guidance=guidance, **options
    )
