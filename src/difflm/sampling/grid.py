"""The sampling time grid and the loop that walks it (shared by DDPM, DDIM and DPM-Solver++).

Notation (DDIM, Song et al. 2021, §4.2; the step schedules of DPM-Solver, Lu et al. 2022):

    T               training steps; index i ∈ 0..T-1 has signal level ᾱ_i, time (i+1)/T
    τ_1 > ... > τ_K the K training indices visited (`respaced_indices`, `trailing_indices`)
    t_1 > ... > t_K the K times the denoiser is evaluated at (`time_grid`): t_1 = 1 (index
                    T-1), t_K = 1/T (index 0; 1/K on the trailing grid); never below 1/T,
                    the model never saw less noise
    λ               log-SNR, log(ᾱ/(1 − ᾱ))
    t, s            a consecutive pair (t_k, t_{k+1}) of the walk; after t_K comes x0 (ᾱ = 1)
    x̂0              the denoiser's estimate of x0 at x_t

A sampler only supplies its update rule: given x̂0, x_t, ᾱ_t and ᾱ_s, the mean and
standard deviation of the Gaussian that x_s is drawn from. An ODE solver (`draw_noise`
False) takes the mean as x_s; its standard deviation then only tells guidance how far
x_s may be moved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from difflm.sampling.base import Callback, Guidance, SampleOutput, StepInfo
from difflm.sampling.rounding import Rounding

if TYPE_CHECKING:
    from difflm.diffusion.schedules import NoiseSchedule
    from difflm.model.denoiser import Denoiser

# (x̂0, x_t, ᾱ_t, ᾱ_s) -> (mean, std) of p(x_s | x_t)
UpdateRule = Callable[[torch.Tensor, torch.Tensor, float, float], tuple[torch.Tensor, float]]

# Options every sampler accepts; a sampler may add its own.
COMMON_OPTIONS = ("cond", "temperature", "clamp_from", "return_trajectory", "progress")
# Options of the samplers that `walk` runs (DDPM, DDIM, DPM-Solver++).
WALK_OPTIONS = (*COMMON_OPTIONS, "grid")

# Spacings of `time_grid`: uniform in training index (= in t) with or without the least
# noisy end, or uniform in λ.
GRIDS = ("time", "trailing", "logsnr")


def check_step_count(steps: object, limit: int | None = None) -> None:
    """Raise ValueError unless `steps` is an integer K ≥ 1, and K ≤ `limit` (the steps a grid can visit) if given."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or (limit is not None and steps > limit):
        bound = "≥ 1" if limit is None else f"in [1, {limit}] (the training steps T)"
        raise ValueError(f"steps must be an integer {bound}, got {steps!r}")


def _top(num_steps: int, top: int | None, k: int) -> int:
    """The first (noisiest) training index of a grid of K = k times: T-1 unless a sampler starts
    lower; ValueError unless 1 ≤ K ≤ top + 1 (the indices from there down to 0)."""
    if top is None:
        top = num_steps - 1
    elif not 0 <= top < num_steps:
        raise ValueError(f"a grid's first training index must be in [0, {num_steps - 1}], got {top}")
    check_step_count(k, top + 1)
    return top


def respaced_indices(num_steps: int, k: int, top: int | None = None) -> list[int]:
    """K evenly spaced training indices from `top` (default T-1) down to 0, strictly decreasing.

    Args:
        num_steps: T.
        k: K, the number of sampling steps, 1 ≤ K ≤ top + 1 (K = 1 gives [top]).
        top: the first index, for a walk that starts below t = 1 (`walk`'s start_index).

    Raises:
        ValueError: K outside [1, top + 1].
    """
    top = _top(num_steps, top, k)
    # floor(x + 0.5) instead of torch.round: round-half-to-even could map two points
    # spaced exactly 1 apart (2.5, 1.5) to the same integer.
    points = torch.linspace(top, 0, k, dtype=torch.float64)
    return (points + 0.5).floor().long().tolist()


def trailing_indices(num_steps: int, k: int, top: int | None = None) -> list[int]:
    """K training indices at the times 1, 1 − 1/K, …, 1/K ("trailing" spacing), strictly decreasing.

    With `top`, the times are t_top·(1, 1 − 1/K, …, 1/K), t_top = (top + 1)/T.

    The last evaluation is at t = 1/K, not 1/T: with few steps, the linspace grid spends
    its second evaluation on an almost clean input, where the model can change nothing
    (K = 2 visits t = 1 and t = 1/T); trailing visits t = 1 and t = 1/2 and steps from there
    onto x̂0 (the "trailing" timestep spacing of Lin et al. 2024, diffusers'
    timestep_spacing="trailing").

    Raises:
        ValueError: K outside [1, top + 1].
    """
    span = _top(num_steps, top, k) + 1
    # Consecutive points are ≥ 1 apart (K ≤ span), so floor(x + 0.5) keeps them distinct.
    return [span - 1 - math.floor(j * span / k + 0.5) for j in range(k)]


def time_grid(
    schedule: NoiseSchedule, k: int, spacing: str = "time", top: int | None = None
) -> tuple[torch.Tensor, list[float]]:
    """The K times t_1 > ... > t_K at which a sampler evaluates the denoiser, and their ᾱ.

    Every spacing starts at the noisiest trained level (t = 1, index T-1; index `top` for
    a walk that starts from a partly denoised state) and never goes below the least noisy
    one (t = 1/T, index 0): below ᾱ_0 the model was never trained.

    Args:
        schedule: the model's noise schedule.
        k: K, 1 ≤ K ≤ T.
        spacing: "time", the respaced training indices (uniform in t from 1 to 1/T; the
            model saw each of these times in training); "trailing", uniform in t from 1
            to 1/K (`trailing_indices`; better at K ≤ 4); or "logsnr", uniform in λ and
            mapped back to a continuous t ∈ [1/T, 1] by the schedule's inverse
            (DPM-Solver's default spacing for low-dimensional data; denser where λ
            changes fast).

    Returns:
        (times [K] in the default float dtype, as given to the denoiser; ᾱ(t_k) as Python
        floats, for float64 step coefficients).

    Raises:
        ValueError: K outside [1, T] or an unknown spacing.
    """
    T = schedule.num_steps
    if spacing in ("time", "trailing"):
        indices = respaced_indices(T, k, top) if spacing == "time" else trailing_indices(T, k, top)
        acp = schedule.alphas_cumprod.tolist()
        return schedule.time_of(torch.tensor(indices)), [acp[i] for i in indices]
    if spacing != "logsnr":
        raise ValueError(f"unknown grid {spacing!r}; valid choices: {', '.join(GRIDS)}")
    top = _top(T, top, k)
    t_max, t_min = (top + 1) / T, 1 / T
    lam_min, lam_max = schedule.log_snr(torch.tensor([t_max, t_min], dtype=torch.float64)).tolist()
    t = schedule.t_from_log_snr(torch.linspace(lam_min, lam_max, k, dtype=torch.float64)).clamp(t_min, t_max)
    # The ends are the trained extremes exactly (the inverse is exact only up to rounding).
    t[0] = t_max
    if k > 1:
        t[-1] = t_min
    return t.to(torch.get_default_dtype()), schedule.alpha_bar(t).tolist()


def check_options(options: dict, valid: Iterable[str]) -> None:
    """Raise ValueError naming any option not in `valid`."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown sampler option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")


def walk(
    update: UpdateRule,
    denoiser: Denoiser,
    shape: tuple[int, ...],
    *,
    steps: int,
    grid: str = "time",
    draw_noise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    guidance: Guidance | None = None,
    cond: object = None,
    temperature: float | None = None,
    clamp_from: int | None = None,
    return_trajectory: bool = False,
    progress: bool = False,
    start: torch.Tensor | None = None,
    start_index: int | None = None,
    noise: Callable[[int], torch.Tensor] | None = None,
) -> SampleOutput:
    """Run the reverse process on the K = `steps` times of `time_grid`.

    Args:
        update: the sampler's rule (x̂0, x_t, ᾱ_t, ᾱ_s) -> (mean, std), called once per
            step in order (a multistep rule may keep state between calls).
        denoiser, shape, callback, guidance: as in `base`.
        steps: K ≤ T.
        grid: the spacing of the K times, "time" or "logsnr" (see `time_grid`).
        draw_noise: x_s = mean + std·z (DDPM, DDIM); False for an ODE solver, whose
            x_s is the mean and whose std only reaches guidance.
        generator: source of x_T and of the noise of every step but the last.
        cond: passed unchanged to the denoiser.
        temperature: x̂0 = softmax(logits/τ)·EMB (None or 1: the model's own x̂0; see `rounding`).
        clamp_from: snap x̂0 to the nearest word embedding at times t ≤ (clamp_from+1)/T,
            i.e. training indices i ≤ clamp_from (Diffusion-LM's clamping trick); None
            never clamps.
        return_trajectory: keep x_s after every step.
        progress: show a tqdm bar.
        start: the state at the first time (default: x_T ~ N(0, I) from `generator`).
        start_index: the training index of the first time (default T-1, t = 1): a walk
            from a partly denoised `start` (the refinement of a distilled draft).
        noise: the noise of step n as noise(n) (default: fresh draws from `generator`);
            a fixed function of x_T makes the walk a deterministic map of its start
            (`difflm.sampling.teacher`).

    Returns:
        SampleOutput with the last x̂0, its tokens and nfe = K.
    """
    schedule, embedding = denoiser.schedule, denoiser.embedding
    rounding = Rounding.of(schedule, temperature=temperature, clamp_from=clamp_from)
    times, alpha_bars = time_grid(schedule, steps, grid, start_index)
    # (t, ᾱ) of each evaluation, then x0 itself; Python floats: step coefficients in float64
    levels = list(zip(times.tolist(), alpha_bars))
    device, dtype = embedding.weight.device, embedding.weight.dtype
    batch = shape[0]

    def fresh(_: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    noise = noise or fresh
    with torch.no_grad():
        x = fresh(-1) if start is None else start  # x_T ~ N(0, I)
        # Self-conditioning sees the previous raw prediction (zeros before the first), as in training.
        prev_x0 = torch.zeros(shape, device=device, dtype=dtype)
        trajectory: list[torch.Tensor] = []
        for n, ((t_now, abar_t), (t_next, abar_s)) in enumerate(
            tqdm(list(zip(levels, levels[1:] + [(0.0, 1.0)])), disable=not progress)
        ):
            last = n == len(levels) - 1
            t = torch.full((batch,), t_now, device=device)

            # 1. predict x̂0 at x_t
            pred = denoiser(x, t, cond=cond, self_cond=prev_x0 if denoiser.self_conditioning else None)
            prev_x0 = pred.x0
            # 2. optionally sharpen x̂0 or clamp it to the nearest word embedding
            x0_hat = rounding.x0(pred, embedding, t_now)
            # 3. mean and std of p(x_s | x_t); no noise on the step that lands on x0
            mean, std = update(x0_hat, x, abar_t, abar_s)
            if last or not draw_noise:
                x = mean
            else:
                x = mean + std * noise(n)
            # 4. guidance edits x_s, knowing the Gaussian it came from
            if guidance is not None and not last:
                std_t = torch.as_tensor(std, device=device, dtype=dtype)
                x = guidance(x, t=t_next, mean=mean, std=std_t)
            # 5. report, 6. record
            if callback is not None:
                callback(StepInfo(step=n, t=float(t[0]), x=x, x0=x0_hat))
            if return_trajectory:
                trajectory.append(x)

        tokens = rounding.tokens(pred, x0_hat, embedding, t_now)
    return SampleOutput(x0=x0_hat, tokens=tokens, trajectory=trajectory, nfe=len(levels))
