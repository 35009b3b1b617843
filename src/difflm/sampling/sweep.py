"""The left-to-right sampler of a run trained with left-to-right noise (AR-Diffusion,
Wu et al. 2023; `diffusion/sweep.py`).

The clock runs down K evenly spaced values u_1 = 1 + λ > … > u_K = (1 + λ)/K, then 0. At
each value every position has its own time t_p(u), left ones cleaner, and takes a DDIM
step (η = 0 deterministic, η = 1 ancestral) from t_p(u_k) to t_p(u_{k+1}):

    x_s = √ᾱ_s·x̂0 + √(1 − ᾱ_s − σ²)·ε̂ + σ·z,     ε̂ = (x_t − √ᾱ_t·x̂0)/√(1 − ᾱ_t)

A position still at t = 1 (to the right of the sweep) keeps its noise, since ᾱ_s = ᾱ_t; one
that reached t = 0 is finished and keeps its x̂0. So the left words settle first and the
network writes each later word knowing them. The network is evaluated at t ≥ 1/T, the least
noise it was trained on. With λ = 0 and K dividing T this is DDIM on the trailing grid.

It takes no gradient guidance: a swept run also learned shared times (`diffusion.sweep` < 1),
so constraints guide it with DDPM or DDIM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from difflm.diffusion.process import eps_from_x0, posterior_variance
from difflm.diffusion.sweep import sweep_times
from difflm.sampling.base import Callback, Guidance, SampleOutput, StepInfo
from difflm.sampling.ddim import check_eta
from difflm.sampling.grid import COMMON_OPTIONS, check_options, check_step_count
from difflm.sampling.rounding import Rounding

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
    **options: Any,
) -> SampleOutput:
    """Sample with K = `steps` steps of the left-to-right sweep.

    Args (the others as in `base`):
        denoiser: as in `base`, with `.max_len` and `.sweep_lag` (the λ it was trained with;
            0: never trained on the sweep).
        steps: K ≥ 1.
        callback: StepInfo.t is the noisiest position's time.
        guidance: must be None (see the module docstring).
        **options: eta ∈ [0, 1] (default 0); lag, λ (default the run's); span [B], each row's
            sweep span s (default L − 1 of the model; the pipeline passes the END position
            of a run with length anchors); cond, temperature, return_trajectory, progress
            (clamp_from only as None).

    Raises:
        ValueError: guidance, a run not trained on the sweep, or a bad option (named).
    """
    check_options(options, (*COMMON_OPTIONS, "eta", "lag", "span"))
    check_step_count(steps)
    if options.get("clamp_from") is not None:
        raise ValueError("the sweep sampler does not clamp: its positions reach low noise at different steps")
    if guidance is not None:
        raise ValueError("the sweep sampler takes no gradient guidance: guide this run with ddpm or ddim")
    lag = options.get("lag", denoiser.sweep_lag)
    if not denoiser.sweep_lag and "lag" not in options:
        raise ValueError("this run was not trained with left-to-right noise: train it with --set diffusion.sweep=0.5")
    eta = check_eta(options.get("eta", 0.0))
    schedule, embedding = denoiser.schedule, denoiser.embedding
    rounding = Rounding.of(schedule, temperature=options.get("temperature"))
    device, dtype = embedding.weight.device, embedding.weight.dtype
    B, L = shape[0], shape[1]
    span = options.get("span")
    span = torch.full((B,), denoiser.max_len - 1, device=device) if span is None else span.to(device)
    clock = torch.linspace(1 + lag, 0, steps + 1, dtype=torch.float64).tolist()  # u_1 … u_K, then 0
    least = 1 / schedule.num_steps

    def times(u: float) -> torch.Tensor:
        return sweep_times(torch.full((B,), u, device=device), span, L, lag)

    def signal(t: torch.Tensor) -> torch.Tensor:
        """ᾱ at times t [B, L] (1 at t = 0, the clean end) -> [B, L, 1] in float64."""
        abar = schedule.alpha_bar(t.clamp(min=least).double())
        return torch.where(t == 0, 1.0, abar)[..., None]

    with torch.no_grad():
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        prev_x0 = torch.zeros(shape, device=device, dtype=dtype)
        tokens = torch.zeros(shape[:2], dtype=torch.long, device=device)  # each position's words when it finishes
        trajectory: list[torch.Tensor] = []
        for n, (u_now, u_next) in enumerate(tqdm(list(zip(clock, clock[1:])), disable=not options.get("progress"))):
            t_now, t_next = times(u_now), times(u_next)
            t_eval = t_now.clamp(min=least)
            pred = denoiser(
                x, t_eval, cond=options.get("cond"), self_cond=prev_x0 if denoiser.self_conditioning else None
            )
            prev_x0 = pred.x0
            x0_hat = rounding.x0(pred, embedding, float(t_eval.max()))
            abar_t, abar_s = signal(t_eval), signal(t_next)
            sigma = eta * posterior_variance(abar_t, abar_s).clamp(min=0).sqrt()
            eps_hat = eps_from_x0(x0_hat.double(), x.double(), abar_t)
            step = abar_s.sqrt() * x0_hat + (1 - abar_s - sigma**2).clamp(min=0).sqrt() * eps_hat
            if eta and n < steps - 1:
                step = step + sigma * torch.randn(shape, generator=generator, device=device, dtype=dtype)
            x = torch.where((t_now == 0)[..., None], x, step.to(dtype))  # finished positions keep their words
            finishing = (t_next == 0) & (t_now > 0)
            tokens = torch.where(finishing, rounding.tokens(pred, x0_hat, embedding, float(t_eval.max())), tokens)
            if callback is not None:
                callback(StepInfo(step=n, t=float(t_eval.max()), x=x, x0=x0_hat))
            if options.get("return_trajectory"):
                trajectory.append(x)
    return SampleOutput(x0=x, tokens=tokens, trajectory=trajectory, nfe=steps)
