"""Sampling a distilled student (`difflm.objectives.distillation`): a one-step draft, then refinement.

Notation: f the student, t_r the refinement time (`refine_from`), ᾱ_r its signal level.

    x̂0 ← f(x_T, 1)                                     the draft: one evaluation (K = 1 stops here)
    x_r = √ᾱ_r·x̂0 + √(1 − ᾱ_r)·z                       re-noise the draft to t_r, z ~ N(0, I)
    K − 1 DDPM steps from x_r on the grid below t_r     the student is still a denoiser

The draft carries what the teacher's K steps decided from x_T; the refinement re-reads it
with fresh noise at a level where the denoiser uses context to mend single words (SDEdit,
Meng et al. 2022; consistency models' multistep sampling re-noises the same way). The
choice of t_r is measured in docs/benchmarks.md ("Sampler distillation").
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from difflm.sampling import ddpm
from difflm.sampling.base import Callback, Guidance, SampleOutput
from difflm.sampling.grid import WALK_OPTIONS, check_options, check_step_count, walk

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser

#: t_r, the time the draft is re-noised to.
REFINE_FROM = 0.5


def sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    refine_from: float = REFINE_FROM,
    **options: Any,
) -> SampleOutput:
    """Sample with K = `steps` evaluations: the draft, then K − 1 DDPM refinement steps.

    Args (the others as in `base`; a step is an evaluation):
        denoiser: a network trained with `model.generator=distilled`.
        steps: K ≥ 1.
        guidance: edits the re-noised draft and each refinement step but the last.
        refine_from: t_r in (0, 1).
        **options: grid (of the refinement, default trailing), cond, temperature, clamp_from,
            return_trajectory, progress (see `grid.walk`).

    Raises:
        ValueError: K < 1, t_r outside (0, 1), more refinement steps than training steps
            below t_r, or an unknown option.
    """
    check_options(options, WALK_OPTIONS)
    check_step_count(steps)
    if not 0 < refine_from < 1:
        raise ValueError(f"refine_from must be in (0, 1), got {refine_from!r}")
    grid = options.pop("grid", "trailing")
    # 1. the draft: one DDPM step from t = 1 lands on the (sharpened) x̂0 at x_T
    draft = walk(ddpm.update, denoiser, shape, steps=1, generator=generator, callback=callback, **options)
    if steps == 1:
        return draft
    # 2. re-noise it to the refinement time (a training index, so that ᾱ_r is the schedule's)
    schedule = denoiser.schedule
    index = max(round(refine_from * schedule.num_steps) - 1, 0)
    if steps - 1 > index + 1:
        raise ValueError(
            f"{steps - 1} refinement steps do not fit below refine_from={refine_from} "
            f"({index + 1} training steps); raise refine_from or lower steps"
        )
    abar = float(schedule.alphas_cumprod[index])
    mean, std = abar**0.5 * draft.x0, (1 - abar) ** 0.5
    x = mean + std * torch.randn(draft.x0.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    if guidance is not None:
        x = guidance(x, t=float(schedule.time_of(torch.tensor(index))), mean=mean, std=torch.as_tensor(std).to(x))
    # 3. K − 1 DDPM steps from there, numbered after the draft for the callback
    shifted = None if callback is None else lambda info: callback(replace(info, step=info.step + 1))
    refined = walk(
        ddpm.update,
        denoiser,
        shape,
        steps=steps - 1,
        grid=grid,
        generator=generator,
        callback=shifted,
        guidance=guidance,
        start=x,
        start_index=index,
        **options,
    )
    return SampleOutput(
        x0=refined.x0, tokens=refined.tokens, trajectory=draft.trajectory + refined.trajectory, nfe=steps
    )
