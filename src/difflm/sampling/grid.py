"""The respaced time grid and the sampling loop that walks it (shared by DDPM and DDIM).

Notation (DDIM, Song et al. 2021, §4.2):

    T               training steps; index i ∈ 0..T-1 has signal level ᾱ_i, time (i+1)/T
    τ_1 > ... > τ_K the K training indices visited (`respaced_indices`)
    t, s            a consecutive pair (τ_k, τ_{k+1}) of the walk; s = -1 is x0 (ᾱ_{-1} = 1)
    x̂0              the denoiser's estimate of x0 at x_t

A sampler only supplies its update rule: given x̂0, x_t, ᾱ_t and ᾱ_s, the mean and
standard deviation of the Gaussian that x_s is drawn from.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from difflm.sampling.base import Callback, Guidance, SampleOutput, StepInfo

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser

# (x̂0, x_t, ᾱ_t, ᾱ_s) -> (mean, std) of p(x_s | x_t)
UpdateRule = Callable[[torch.Tensor, torch.Tensor, float, float], tuple[torch.Tensor, float]]

# Options every grid sampler accepts; a sampler may add its own.
COMMON_OPTIONS = ("cond", "clamp_from", "return_trajectory", "progress")


def respaced_indices(num_steps: int, k: int) -> list[int]:
    """K evenly spaced training indices from T-1 down to 0, strictly decreasing.

    Args:
        num_steps: T.
        k: K, the number of sampling steps, 1 ≤ K ≤ T (K = 1 gives [T-1]).

    Raises:
        ValueError: K outside [1, T].
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_steps:
        raise ValueError(f"steps must be an integer in [1, {num_steps}] (the training steps T), got {k!r}")
    # floor(x + 0.5) instead of torch.round: round-half-to-even could map two points
    # spaced exactly 1 apart (2.5, 1.5) to the same integer.
    points = torch.linspace(num_steps - 1, 0, k, dtype=torch.float64)
    return (points + 0.5).floor().long().tolist()


def check_options(options: dict, valid: Iterable[str]) -> None:
    """Raise ValueError naming any option not in `valid`."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown sampler option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")


def clamps_at(clamp_from: int | None, t: float, num_steps: int) -> bool:
    """Whether a sampler off the index grid clamps x̂0 at time t: when t ≤ t(clamp_from) = (clamp_from + 1)/T.

    Raises:
        ValueError: clamp_from is neither None nor an integer.
    """
    if clamp_from is None:
        return False
    if isinstance(clamp_from, bool) or not isinstance(clamp_from, int):
        raise ValueError(f"clamp_from must be an integer index or None, got {clamp_from!r}")
    return t <= (clamp_from + 1) / num_steps


def walk(
    update: UpdateRule,
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    cond: object = None,
    clamp_from: int | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
) -> SampleOutput:
    """Run the reverse process on K = `steps` respaced training indices.

    Args:
        update: the sampler's rule (x̂0, x_t, ᾱ_t, ᾱ_s) -> (mean, std).
        denoiser: x̂0 network with `.schedule`, `.embedding`, `.self_conditioning`.
        shape: (B, L, d).
        steps: K ≤ T.
        generator: source of x_T and of the noise of every step but the last.
        callback: called with a StepInfo after each step.
        guidance: edits x_s after each step but the last.
        cond: passed unchanged to the denoiser.
        clamp_from: snap x̂0 to the nearest word embedding at indices i ≤ clamp_from
            (Diffusion-LM's clamping trick); None never clamps.
        return_trajectory: keep x_s after every step.
        progress: show a tqdm bar.

    Returns:
        SampleOutput with the last x̂0, its tokens and nfe = K.
    """
    if clamp_from is not None and (isinstance(clamp_from, bool) or not isinstance(clamp_from, int)):
        raise ValueError(f"clamp_from must be an integer index or None, got {clamp_from!r}")
    schedule, embedding = denoiser.schedule, denoiser.embedding
    indices = respaced_indices(schedule.num_steps, steps)
    acp = schedule.alphas_cumprod.tolist()  # Python floats: step coefficients in float64
    device, dtype = embedding.weight.device, embedding.weight.dtype
    batch = shape[0]

    with torch.no_grad():
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)  # x_T ~ N(0, I)
        # Self-conditioning sees the previous raw prediction (zeros before the first), as in training.
        prev_x0 = torch.zeros(shape, device=device, dtype=dtype)
        trajectory: list[torch.Tensor] = []
        for n, (i, s) in enumerate(tqdm(list(zip(indices, indices[1:] + [-1])), disable=not progress)):
            last = s == -1
            t = schedule.time_of(torch.full((batch,), i, device=device))

            # 1. predict x̂0 at x_t
            pred = denoiser(x, t, cond=cond, self_cond=prev_x0 if denoiser.self_conditioning else None)
            prev_x0 = pred.x0
            # 2. optionally clamp x̂0 to the nearest word embedding
            clamped = clamp_from is not None and i <= clamp_from
            x0_hat = embedding.clamp(pred.x0) if clamped else pred.x0
            # 3. mean and std of p(x_s | x_t); no noise on the step that lands on x0
            mean, std = update(x0_hat, x, acp[i], acp[s] if s >= 0 else 1.0)
            if last:
                x = mean
            else:
                x = mean + std * torch.randn(shape, generator=generator, device=device, dtype=dtype)
                # 4. guidance edits x_s, knowing the Gaussian it came from
                if guidance is not None:
                    std_t = torch.as_tensor(std, device=device, dtype=dtype)
                    x = guidance(x, t=float(schedule.time_of(s)), mean=mean, std=std_t)
            # 5. report, 6. record
            if callback is not None:
                callback(StepInfo(step=n, t=float(t[0]), x=x, x0=x0_hat))
            if return_trajectory:
                trajectory.append(x)

        if clamped or pred.logits is None:
            tokens = embedding.nearest(x0_hat)
        else:
            tokens = pred.logits.argmax(-1)
    return SampleOutput(x0=x0_hat, tokens=tokens, trajectory=trajectory, nfe=len(indices))
