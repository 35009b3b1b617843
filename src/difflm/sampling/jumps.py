"""The loop of the flow-map samplers (shortcut, MeanFlow): jumps along a grid of path times.

Notation (`difflm.diffusion.flowmap`):

    1 = s_0 > s_1 > … > s_K = 0   the grid, in path time s (s = 1 the noisiest trained level)
    x̂0_k                          f(x_{s_k}, s_k, s_k − s_{k+1}), the prediction serving jump k
    x_{s_{k+1}}                   (s_{k+1}/s_k)·x_{s_k} + (1 − s_{k+1}/s_k)·x̂0_k

The last jump lands on x̂0. The walk starts from the VP state x_T = ε of DDPM/DDIM, and
hands callbacks, trajectories and guidance VP states with their schedule times, as they do;
the steps are deterministic, so guidance gets the new state as its mean and σ = 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from difflm.diffusion.flowmap import FlowPath, jump
from difflm.sampling.base import Callback, Guidance, SampleOutput, StepInfo
from difflm.sampling.rounding import Rounding

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def uniform_grid(steps: int) -> list[float]:
    """K + 1 path times 1, 1 − 1/K, …, 0: K equal jumps (dyadic for K a power of two)."""
    return [1 - k / steps for k in range(steps + 1)]


def jump_walk(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    grid: list[float],
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    cond: object = None,
    temperature: float | None = None,
    clamp_from: int | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleOutput:
    """Jump from s = 1 to s = 0 along `grid`.

    Args:
        denoiser: an x̂0 network with a jump input (`model.generator=shortcut` or `meanflow`).
        grid: s_0 = 1 > … > s_K = 0, Python floats (their differences are the jump inputs).
        generator: source of x_T.
        guidance: edits the VP state after each jump but the last.
        return_trajectory: keep the VP state after every jump.
        shape, callback, cond, temperature, clamp_from, progress: as in `grid.walk`.

    Returns:
        SampleOutput with the last x̂0, its tokens and nfe = K.
    """
    path = FlowPath.of(denoiser.schedule)
    rounding = Rounding.of(denoiser.schedule, temperature=temperature, clamp_from=clamp_from)
    embedding = denoiser.embedding
    device, dtype = embedding.weight.device, embedding.weight.dtype
    batch = shape[0]

    def full(value: float) -> torch.Tensor:
        return torch.full((batch,), value, device=device, dtype=dtype)

    with torch.no_grad():
        x = path.start(torch.randn(shape, generator=generator, device=device, dtype=dtype))
        trajectory: list[torch.Tensor] = []
        for n, (s, r) in enumerate(tqdm(list(zip(grid, grid[1:])), disable=not progress)):
            t = path.to_vp(x, full(s))[1]
            # 1. predict the x̂0 that serves the jump s → r
            pred = path.predict(denoiser, x, full(s), full(s - r), cond=cond)
            # 2. optionally sharpen it or clamp it to the nearest word embedding
            x0_hat = rounding.x0(pred, embedding, float(t[0]))
            # 3. jump; the last one lands on x̂0
            x = jump(x, x0_hat, full(s), full(r))
            if r > 0:
                x_vp, t_r = path.to_vp(x, full(r))
                # 4. guidance edits the VP state (deterministic step: mean = the state, σ = 0)
                if guidance is not None:
                    x_vp = guidance(x_vp, t=float(t_r[0]), mean=x_vp, std=torch.zeros((), device=device, dtype=dtype))
                    x = path.from_vp(x_vp, full(r))
            else:
                x_vp = x
            # 5. report, 6. record
            if callback is not None:
                callback(StepInfo(step=n, t=float(t[0]), x=x_vp, x0=x0_hat))
            if return_trajectory:
                trajectory.append(x_vp)
        tokens = rounding.tokens(pred, x0_hat, embedding, float(t[0]))
    return SampleOutput(x0=x0_hat, tokens=tokens, trajectory=trajectory, nfe=len(grid) - 1)
