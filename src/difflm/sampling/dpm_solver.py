"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2) for an x̂0 network.

A second-order multistep solver of the diffusion ODE in data-prediction form: each step
costs one denoiser evaluation and reuses the previous one's x̂0 to correct the first-order
(= deterministic DDIM) step, so few evaluations follow the ODE closely.

Notation (Lu et al.; the official `multistep_dpm_solver_second_update`):

    α_t, σ_t    √ᾱ_t and √(1 − ᾱ_t): x_t = α_t·x0 + σ_t·ε
    λ_t         log(α_t/σ_t), half the schedule's log-SNR
    t, s        the current grid time and the next, less noisy one (after the last: x0)
    h           λ_s − λ_t > 0, the step in λ; h' the previous step's
    r           h'/h
    D, D'       x̂0 at (x_t, t), and at the previous grid time
    D̃           the x̂0 the step uses: D (first order), or D + (D − D')/(2r) (second order)

    x_s = (σ_s/σ_t)·x_t − α_s·(e^{−h} − 1)·D̃                  (Alg. 2, the multistep update)

With D̃ = D this is exactly the deterministic DDIM step. The first step has no D' and is
first order. The grid (`grid.time_grid`) ends at t = 1/T, the least noisy level the model
was trained on; the final step goes from there onto x0 (σ_s = 0, h = ∞), where only the
first-order step is defined and it yields D itself ("lower_order_final", at any K, as in
diffusers with final_sigmas_type="zero"). So the sample ends on the last x̂0 and K steps
cost K evaluations; K ≤ 2 is DDIM. (The official code ends at a small t_eps instead and,
below 15 steps, makes the step into it first order. Doing that for the step into 1/T
here cost accuracy on a Gaussian toy with a closed-form ODE solution and changed nothing
measurable on a trained model, so only the step onto x0 is first order.)

Grid. "time" (the default) visits the respaced training indices, like DDIM; "logsnr" is
uniform in λ. On the `sqrt` schedule the λ-uniform grid spends points near pure noise
and near the clean end; it was further from the fine ODE solution than "time" at K ≤ 8
on a Gaussian toy and at K ≤ 12 on a trained grammar model, and closer at K = 16–25.

Guidance. The solver is deterministic, so x_s has no Gaussian of its own. Guidance is
given x_s as the mean and, as its spread, the standard deviation √β̃ of the posterior
q(x_s | x_t, x0) between the same two grid points: the noise an ancestral (DDPM) step
over that interval would add. The fluency term λ‖x − μ‖²/σ² of Diffusion-LM's guidance
then holds the edited x_s as tightly as it holds a DDPM step on the same grid, for which
its defaults were chosen. (Deterministic DDIM passes σ = 0, which guidance replaces by a
fixed `fallback_variance`; that scale ignores how long the step is.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from difflm.diffusion.process import posterior_variance
from difflm.sampling.base import Callback, Guidance, SampleOutput
from difflm.sampling.grid import WALK_OPTIONS, check_options, walk

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def half_log_snr(abar: float) -> float:
    """λ = log(α/σ) = ½·log(ᾱ/(1 − ᾱ)) for 0 < ᾱ < 1."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


class Multistep:
    """The 2M update; it remembers D' and λ of the previous step.

    Use a fresh instance per sampler run, called once per step in order (`grid.walk`'s
    update rule): (x̂0, x_t, ᾱ_t, ᾱ_s) -> (x_s, √β̃ of the step).
    """

    def __init__(self) -> None:
        self.previous: tuple[torch.Tensor, float] | None = None  # (D', λ of the previous grid time)

    def __call__(
        self, x0_hat: torch.Tensor, x_t: torch.Tensor, abar_t: float, abar_s: float
    ) -> tuple[torch.Tensor, float]:
        spread = posterior_variance(abar_t, abar_s) ** 0.5
        # 1. onto x0: σ_s = 0 and e^{−h} = 0, so the (first-order) step is D itself
        if abar_s == 1.0:
            return x0_hat, spread
        # 2. the step in λ
        lam_t, lam_s = half_log_snr(abar_t), half_log_snr(abar_s)
        h = lam_s - lam_t
        # 3. D̃: first order without history, else the multistep correction
        if self.previous is None:
            d = x0_hat
        else:
            d_prev, lam_prev = self.previous
            r = (lam_t - lam_prev) / h
            d = x0_hat + (x0_hat - d_prev) / (2 * r)
        self.previous = (x0_hat, lam_t)
        # 4. the exponential-integrator step (α_s·(e^{−h} − 1) < 0: it moves x toward D̃)
        sigma_ratio = ((1 - abar_s) / (1 - abar_t)) ** 0.5
        return sigma_ratio * x_t - abar_s**0.5 * math.expm1(-h) * d, spread


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
    """Sample with K = `steps` DPM-Solver++(2M) steps (K denoiser evaluations).

    Args (the others as in `base`):
        steps: K, 1 ≤ K ≤ T. K ≤ 2 is deterministic DDIM on the same grid.
        generator: source of x_T (the only randomness).
        guidance: its spread: see the module notes.
        **options: grid, "time" (default: the respaced training indices DDIM uses),
            "trailing" or "logsnr" (uniform in λ; see the module notes); and cond,
            temperature, clamp_from, return_trajectory, progress (see `grid.walk`).

    Raises:
        ValueError: an unknown option or grid, or a bad value.
    """
    check_options(options, WALK_OPTIONS)
    return walk(
        Multistep(),
        denoiser,
        shape,
        steps=steps,
        draw_noise=False,
        generator=generator,
        callback=callback,
        guidance=guidance,
        **options,
    )
