"""Shortcut-model sampling (Frans et al. 2024): K ∈ {1, 2, 4, …} equal jumps of size d = 1/K.

The network was trained on jumps d ∈ {1, 1/2, …, 2^-levels} (`shortcut.levels`), so K up
to 2^levels steps use trained jump sizes; K = 1 is x = f(x_1, 1, 1). See
`difflm.objectives.shortcut` for the model and `sampling.jumps` for the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from difflm.sampling.base import Callback, Guidance, SampleOutput
from difflm.sampling.grid import COMMON_OPTIONS, check_options
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
    """Sample with K = `steps` jumps of size 1/K (K a power of two).

    Args (the others as in `base`; a step is a jump):
        denoiser: a network trained with `model.generator=shortcut`.
        steps: K = 1, 2, 4, …
        generator: source of x_T.
        **options: cond, temperature, clamp_from, return_trajectory, progress (see `jumps.jump_walk`).

    Raises:
        ValueError: K not a power of two, or an unknown option.
    """
    check_options(options, COMMON_OPTIONS)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or steps & (steps - 1):
        raise ValueError(f"shortcut sampling takes a power of two of steps (1, 2, 4, …), got {steps!r}")
    return jump_walk(
        denoiser, shape, uniform_grid(steps), generator=generator, callback=callback, guidance=guidance, **options
    )
