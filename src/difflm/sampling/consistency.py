"""Multistep consistency sampling (Song et al. 2023, Algorithm 1).

Notation (`difflm.objectives.consistency`): f(x, σ) the consistency function, σ_min and
σ_max the schedule's trained range, z ~ N(0, I) fresh at each step.

    σ_max = σ_1 > σ_2 > … > σ_K > σ_min   σ at the schedule times t_k = 1 − (k − 1)/K
    x ← f(σ_max·z, σ_max)
    x ← f(x + √(σ_k² − σ_min²)·z, σ_k)     for k = 2..K

The re-noising levels are uniform in the schedule's time, like DDIM's grid, rather than on a
Karras grid (ρ = 7) as in the official sampler: with σ_max ≈ 635 (the sqrt schedule's last
level at T = 200; 2225 at T = 2000) a Karras grid re-noises a 2-step sample to σ ≈ 36 or
more, which erases it. Toy corpus,
consistency distillation, template share at 1/2/4/8 steps: Karras 0.64/0.63/0.82/0.91,
uniform in t 0.64/0.89/0.99/1.00.

The state after each step is f, a clean estimate; callbacks and trajectories see it. The
re-noised point of step k is a draw of N(f, (σ_k² − σ_min²)·I), which guidance edits in its
VP view (divided by √(1 + σ_k²), at the schedule time of σ_k), as it edits DDPM's steps.
Tokens are the nearest word embeddings of the last f.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from difflm.diffusion.consistency import combine, sigma_range
from difflm.diffusion.paths import denoise_edm, edm_to_vp, sigma_of_t
from difflm.sampling.base import Callback, Guidance, SampleOutput, StepInfo
from difflm.sampling.grid import COMMON_OPTIONS, check_options, check_step_count
from difflm.sampling.rounding import Rounding

if TYPE_CHECKING:
    from difflm.diffusion.schedules import NoiseSchedule
    from difflm.model.denoiser import Denoiser


def sampling_sigmas(schedule: NoiseSchedule, steps: int) -> list[float]:
    """σ_1 > … > σ_K > σ_min: σ at the schedule times 1, 1 − 1/K, …, 1/K."""
    t = 1 - torch.arange(steps, dtype=torch.float64) / steps
    return sigma_of_t(schedule, t).tolist()


def sample(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    cond: object = None,
    temperature: float | None = None,
    clamp_from: int | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    **options,
) -> SampleOutput:
    """Sample with K = `steps` evaluations of the consistency function.

    Args (the others as in `base` and `grid.walk`; a step is an evaluation):
        denoiser: a network trained with `model.generator=consistency`.
        steps: K ≥ 1.
        guidance: edits each re-noised point.
        return_trajectory: keep f after every step.

    Raises:
        ValueError: K < 1, or an unknown option.
    """
    check_options(options, COMMON_OPTIONS)
    check_step_count(steps)
    rounding = Rounding.of(denoiser.schedule, temperature=temperature, clamp_from=clamp_from)
    sigma_min, sigma_max = sigma_range(denoiser.schedule)
    sigmas = sampling_sigmas(denoiser.schedule, steps)
    embedding = denoiser.embedding
    device, dtype = embedding.weight.device, embedding.weight.dtype
    batch = shape[0]

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    with torch.no_grad():
        x = sigma_max * noise()
        trajectory: list[torch.Tensor] = []
        for n, sigma in enumerate(tqdm(sigmas, disable=not progress)):
            sig = torch.full((batch,), sigma, device=device, dtype=dtype)
            scales, t = edm_to_vp(denoiser.schedule, sig)
            scale = float(scales[0])
            if n > 0:
                # 1. re-noise the last f to σ_k; guidance edits the noisy point's VP view
                std = (sigma**2 - sigma_min**2) ** 0.5
                mean, x = x, x + std * noise()
                if guidance is not None:
                    std_vp = torch.as_tensor(std / scale, device=device, dtype=dtype)
                    x = guidance(x / scale, t=float(t[0]), mean=mean / scale, std=std_vp) * scale
            # 2. the network's x̂0, optionally sharpened or clamped, and 3. f = c_skip·x + (1 − c_skip)·x̂0
            pred = denoise_edm(denoiser, x, sig, cond=cond)
            x0_hat = rounding.x0(pred, embedding, float(t[0]))
            x = combine(x, x0_hat, sig, sigma_min)
            # 4. report, 5. record
            if callback is not None:
                callback(StepInfo(step=n, t=float(t[0]), x=x, x0=x0_hat))
            if return_trajectory:
                trajectory.append(x)
        tokens = embedding.nearest(x)
    return SampleOutput(x0=x, tokens=tokens, trajectory=trajectory, nfe=len(sigmas))
