"""Gaussian diffusion math: forward process, posteriors, parameterizations, variational bound.

Notation (DDPM, Ho et al. 2020; DDIM, Song et al. 2021; v: Salimans & Ho 2022):

    x0          clean embeddings EMB(w), [B, L, d]
    x_t         noisy state, x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε                (q(x_t | x0))
    ε           the standard normal noise in x_t
    ᾱ_t, ᾱ_s    signal levels of the current and an earlier (less noisy) state, s < t
    β_{t|s}     1 − ᾱ_t/ᾱ_s, the variance of q(x_t | x_s); β_t for consecutive steps
    β̃           (1 − ᾱ_s)/(1 − ᾱ_t)·β_{t|s}, the variance of q(x_s | x_t, x0)
    v           √ᾱ·ε − √(1 − ᾱ)·x0
    score       ∇ log q(x_t | x0) = −ε/√(1 − ᾱ)
    x̂0          the denoiser's estimate of x0

Training indices i = 0..T-1 follow `NoiseSchedule`: ᾱ_i = alphas_cumprod[i], and the
state "before" index 0 is x0 itself (ᾱ_{-1} = 1).

`abar` arguments are Python floats or tensors that broadcast against x ([B, 1, 1] or
0-dim) and have x's dtype; the functions do no reshaping of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import overload

import torch
import torch.nn.functional as F

from difflm.diffusion.schedules import NoiseSchedule

Abar = torch.Tensor | float
PARAMETERIZATIONS = ("x0", "eps", "v")


# --- forward process --------------------------------------------------------------------


def q_sample(x0: torch.Tensor, abar: Abar, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ·x0 + √(1 − ᾱ)·ε, a draw from q(x_t | x0) (DDPM eq. 4)."""
    return abar**0.5 * x0 + (1 - abar) ** 0.5 * noise


# --- posteriors -------------------------------------------------------------------------


# Floats give a float (a sampler's step), a tensor anywhere gives a tensor (a table of steps).
@overload
def posterior_variance(abar_t: float, abar_s: float) -> float: ...
@overload
def posterior_variance(abar_t: torch.Tensor, abar_s: Abar) -> torch.Tensor: ...
@overload
def posterior_variance(abar_t: Abar, abar_s: torch.Tensor) -> torch.Tensor: ...
def posterior_variance(abar_t: Abar, abar_s: Abar) -> Abar:
    """β̃ = (1 − ᾱ_s)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_s), the variance of q(x_s | x_t, x0) (DDPM eq. 7).

    Zero when ᾱ_s = 1 (the step that lands on x0).
    """
    return (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)


@overload
def posterior_between(
    x0: torch.Tensor, x_t: torch.Tensor, abar_t: float, abar_s: float
) -> tuple[torch.Tensor, float]: ...
@overload
def posterior_between(x0: torch.Tensor, x_t: torch.Tensor, abar_t: Abar, abar_s: Abar) -> tuple[torch.Tensor, Abar]: ...
def posterior_between(x0: torch.Tensor, x_t: torch.Tensor, abar_t: Abar, abar_s: Abar) -> tuple[torch.Tensor, Abar]:
    """q(x_s | x_t, x0) for any two noise levels ᾱ_t < ᾱ_s (a respaced step, or s = t-1).

    Args:
        x0: x0 or x̂0, [B, L, d].
        x_t: the current state, [B, L, d].
        abar_t: ᾱ_t of x_t.
        abar_s: ᾱ_s of the target state; 1 for x0 itself.

    Returns:
        (mean μ̃, variance β̃), DDPM eq. 7 with β_t replaced by β_{t|s} = 1 − ᾱ_t/ᾱ_s.
    """
    beta_ts = 1 - abar_t / abar_s
    mean = (abar_s**0.5 * beta_ts / (1 - abar_t)) * x0 + ((abar_t / abar_s) ** 0.5 * (1 - abar_s) / (1 - abar_t)) * x_t
    return mean, posterior_variance(abar_t, abar_s)


def posterior(
    schedule_or_alphas: NoiseSchedule | torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, i: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(x_{i-1} | x_i, x0) between consecutive training indices.

    Args:
        schedule_or_alphas: a NoiseSchedule or its alphas_cumprod [T].
        x0: x0 or x̂0, [B, L, d].
        x_t: the state at index i, [B, L, d].
        i: training index, an int or a LongTensor [B].

    Returns:
        (mean [B, L, d], variance, log_variance), the last two [B, 1, 1] (0-dim for an int
        i). The variance is 0 at i = 0; as in improved-diffusion the log-variance there is
        clipped to the value at i = 1 so that it stays finite.
    """
    acp = schedule_or_alphas.alphas_cumprod if isinstance(schedule_or_alphas, NoiseSchedule) else schedule_or_alphas
    acp = acp.to(device=x_t.device, dtype=torch.float64)
    acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])  # ᾱ_{i-1}, with ᾱ_{-1} = 1
    variances = posterior_variance(acp, acp_prev)
    log_variances = torch.cat([variances[1:2], variances[1:]]).log()
    abar_t, abar_s, variance, log_variance = (_at(table, i, x_t) for table in (acp, acp_prev, variances, log_variances))
    mean, _ = posterior_between(x0, x_t, abar_t, abar_s)
    return mean, variance, log_variance


def _at(table: torch.Tensor, i: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """table[i] in like's dtype, shaped [B, 1, ..., 1] to broadcast against `like` (0-dim for an int i)."""
    value = table[torch.as_tensor(i, device=table.device)]
    if value.ndim == 1:
        value = value.view(-1, *([1] * (like.ndim - 1)))
    return value.to(like.dtype)


# --- the four views of one prediction ---------------------------------------------------


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, abar: Abar) -> torch.Tensor:
    """ε = (x_t − √ᾱ·x0)/√(1 − ᾱ)."""
    return (x_t - abar**0.5 * x0) / (1 - abar) ** 0.5


def x0_from_eps(eps: torch.Tensor, x_t: torch.Tensor, abar: Abar) -> torch.Tensor:
    """x0 = (x_t − √(1 − ᾱ)·ε)/√ᾱ (DDPM eq. 15)."""
    return (x_t - (1 - abar) ** 0.5 * eps) / abar**0.5


def v_from_x0(x0: torch.Tensor, x_t: torch.Tensor, abar: Abar) -> torch.Tensor:
    """v = √ᾱ·ε − √(1 − ᾱ)·x0, written without ε as (√ᾱ·x_t − x0)/√(1 − ᾱ)."""
    return (abar**0.5 * x_t - x0) / (1 - abar) ** 0.5


def x0_from_v(v: torch.Tensor, x_t: torch.Tensor, abar: Abar) -> torch.Tensor:
    """x0 = √ᾱ·x_t − √(1 − ᾱ)·v."""
    return abar**0.5 * x_t - (1 - abar) ** 0.5 * v


def score_from_eps(eps: torch.Tensor, abar: Abar) -> torch.Tensor:
    """∇_x log q(x_t) ≈ −ε/√(1 − ᾱ) (Tweedie)."""
    return -eps / (1 - abar) ** 0.5


def eps_from_score(score: torch.Tensor, abar: Abar) -> torch.Tensor:
    """ε = −√(1 − ᾱ)·score."""
    return -((1 - abar) ** 0.5) * score


Conversion = Callable[[torch.Tensor, torch.Tensor, Abar], torch.Tensor]  # (value, x_t, ᾱ) -> value in another view
#: The conversions to x̂0 from each view but x0's (its output is x̂0 itself), and back.
_TO_X0: dict[str, Conversion] = {"eps": x0_from_eps, "v": x0_from_v}
_FROM_X0: dict[str, Conversion] = {"eps": eps_from_x0, "v": v_from_x0}


def _convert(
    kind: str, views: dict[str, Conversion], value: torch.Tensor, x_t: torch.Tensor, abar: Abar
) -> torch.Tensor:
    if kind == "x0":
        return value
    if kind not in views:
        raise ValueError(f"unknown parameterization {kind!r}; valid choices: {', '.join(PARAMETERIZATIONS)}")
    return views[kind](value, x_t, abar)


def to_x0(kind: str, output: torch.Tensor, x_t: torch.Tensor, abar: Abar) -> torch.Tensor:
    """x̂0 from a network output of the given parameterization ("x0", "eps" or "v")."""
    return _convert(kind, _TO_X0, output, x_t, abar)


def from_x0(kind: str, x0: torch.Tensor, x_t: torch.Tensor, abar: Abar) -> torch.Tensor:
    """The network output of the given parameterization ("x0", "eps" or "v") that means x̂0."""
    return _convert(kind, _FROM_X0, x0, x_t, abar)


# --- variational bound ------------------------------------------------------------------


def normal_kl(mean1: torch.Tensor, logvar1: Abar, mean2: torch.Tensor, logvar2: Abar) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    logvar1, logvar2 = torch.as_tensor(logvar1, dtype=mean1.dtype), torch.as_tensor(logvar2, dtype=mean1.dtype)
    return 0.5 * (-1 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp())


def prior_kl(x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """L_T = KL(q(x_T | x0) ‖ N(0, I)) summed over all but the batch dimension, [B]."""
    abar = _at(schedule.alphas_cumprod, schedule.num_steps - 1, x0)
    kl = normal_kl(abar**0.5 * x0, (1 - abar).log(), torch.zeros_like(x0), 0.0)
    return kl.flatten(1).sum(1)


def _gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """−log N(x; mean, e^log_variance), elementwise (a density: may be negative)."""
    return 0.5 * (math.log(2 * math.pi) + log_variance + (x - mean) ** 2 * (-log_variance).exp())


@dataclass
class VLBTerms:
    """Per-example terms of the variational bound on −log p(w), in nats.

    Attributes:
        indices: the training indices i evaluated, LongTensor [n].
        steps: L_i for each evaluated i, [B, n]. For i ≥ 1,
            L_i = KL(q(x_{i-1} | x_i, x0) ‖ p_θ(x_{i-1} | x_i)); for i = 0 it is the
            decoder term −log p_θ(x0 | x_0), a Gaussian density (may be negative).
        prior: L_T = KL(q(x_{T-1} | x0) ‖ N(0, I)), [B].
        rounding: −log p(w | x0) summed over positions, [B].
        num_steps: T.
        num_tokens: L, the tokens per example.
    """

    indices: torch.Tensor
    steps: torch.Tensor
    prior: torch.Tensor
    rounding: torch.Tensor
    num_steps: int
    num_tokens: int


def vlb_terms(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    ids: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    rounding_logits_fn: Callable[[torch.Tensor], torch.Tensor],
    indices: torch.Tensor | list[int] | None = None,
    generator: torch.Generator | None = None,
) -> VLBTerms:
    """The terms of the Diffusion-LM bound (Li et al. 2022, eq. 2 with the rounding term).

    −log p(w) ≤ L_T + Σ_{i=0}^{T-1} L_i − log p(w | x0), with x0 = EMB(w) taken as given
    (the entropy of q(x0 | w) is not included). p_θ(x_{i-1} | x_i) is the posterior of
    `posterior` with x̂0 = denoise_fn(x_i, t_i) in place of x0, with the same fixed
    variance β̃, so each KL reduces to ‖μ̃(x0) − μ̃(x̂0)‖²/(2β̃).

    Args:
        denoise_fn: x̂0 = denoise_fn(x_t [B, L, d], t [B] float).
        x0: embeddings of the words, [B, L, d].
        ids: the words w, [B, L].
        schedule: the training schedule.
        rounding_logits_fn: x0 [B, L, d] -> logits of p(w | x0), [B, L, V].
        indices: training indices to evaluate (default all T); one draw of x_i each.
        generator: source of the noise ε.

    Returns:
        VLBTerms; combine them with `nll_bound_per_token`.
    """
    B, T = x0.shape[0], schedule.num_steps
    indices = torch.arange(T) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    if indices.ndim != 1 or len(indices) == 0 or bool(((indices < 0) | (indices >= T)).any()):
        raise ValueError(f"indices must be a non-empty 1-D list of integers in [0, {T - 1}], got {indices.tolist()}")
    steps = []
    for i in indices.tolist():
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = q_sample(x0, _at(schedule.alphas_cumprod, i, x0), noise)
        x0_hat = denoise_fn(x_t, schedule.time_of(torch.full((B,), i, device=x0.device)))
        true_mean, _, log_variance = posterior(schedule, x0, x_t, i)
        model_mean, _, _ = posterior(schedule, x0_hat, x_t, i)
        # At i = 0 the true posterior is a point mass at x0, so the KL is replaced by
        # the decoder likelihood of x0 under p_θ (clipped variance, as in improved-diffusion).
        if i == 0:
            term = _gaussian_nll(x0, model_mean, log_variance)
        else:
            term = normal_kl(true_mean, log_variance, model_mean, log_variance)
        steps.append(term.flatten(1).sum(1))
    logits = rounding_logits_fn(x0)
    rounding = F.cross_entropy(logits.flatten(0, -2), ids.flatten(), reduction="none").view(B, -1).sum(1)
    return VLBTerms(
        indices=indices,
        steps=torch.stack(steps, dim=1),
        prior=prior_kl(x0, schedule),
        rounding=rounding,
        num_steps=T,
        num_tokens=ids.shape[1],
    )


def nll_bound_per_token(terms: VLBTerms) -> torch.Tensor:
    """The bound on −log p(w) per token, in nats, [B].

    (L_T + (T/n)·Σ_{evaluated i} L_i − log p(w | x0)) / L. With all T indices this is the
    bound itself; with n indices drawn uniformly from 0..T-1 the scaled sum is an
    unbiased estimate of Σ_i L_i, hence of the bound.
    """
    n = terms.steps.shape[1]
    total = terms.prior + terms.rounding + terms.steps.sum(1) * (terms.num_steps / n)
    return total / terms.num_tokens
