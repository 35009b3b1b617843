"""Guiding a denoiser away from a weaker version of itself.

Notation:

    f(x_t, t)      the denoiser's raw output: word logits (predict=logits), else x̂0
    f_weak         a worse prediction of the same quantity at the same (x_t, t)
    w              the guidance scale: 0 gives f_weak, 1 the plain denoiser, > 1 goes past it

    f̃(x_t, t) = f_weak + w·(f − f_weak)

Classifier-free guidance (`difflm.control.classifier_free`) is this with the unconditional
prediction as f_weak. Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad
version of itself") takes a weaker model of the same data instead: the directions in which
the good model improves on the weak one are the ones it has learnt best, so stepping further
along them removes the samples that both get wrong without narrowing what is sampled the way
a condition would. Which output is combined, and why logits rather than x̂0, is explained in
`classifier_free`.

`SelfConditioningGuidance` needs no second model. A self-conditioned denoiser (Analog Bits)
was trained half of the time without its self-conditioning input, so the same weights with
that input zeroed are a weaker denoiser of the same x_t, one that cannot see the draft of
the previous step. What it buys against unguided sampling with as many evaluations is
measured in docs/benchmarks.md ("Self-conditioning guidance").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from difflm.model.denoiser import Prediction
from difflm.sampling.wrappers import DenoiserLike, DenoiserWrapper

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser

#: The scale `Pipeline.generate` uses on a self-conditioned run unless told otherwise.
SC_GUIDANCE = 2.0


def check_scale(scale: float) -> float:
    """w as a float; ValueError unless it is a finite number ≥ 0."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"guidance scale w must be a number ≥ 0, got {scale!r}")
    return float(scale)


def extrapolate(denoiser: DenoiserLike, strong: Prediction, weak: Prediction, scale: float) -> Prediction:
    """f̃ = f_weak + w·(f − f_weak) of two predictions at the same (x_t, t), as the denoiser's Prediction."""
    if denoiser.config.predict == "logits":
        return denoiser.from_logits(weak.logits + scale * (strong.logits - weak.logits))
    x0 = weak.x0 + scale * (strong.x0 - weak.x0)
    return Prediction(x0=x0, logits=denoiser.embedding.logits(x0))


class GuidedDenoiser(DenoiserWrapper):
    """A wrapper that guides with a scale w: f̃ = f_weak + w·(f − f_weak) (`extrapolate`).

    Raises:
        ValueError: a negative or non-finite w.
    """

    def __init__(self, denoiser: Denoiser | DenoiserWrapper, scale: float) -> None:
        self.scale = check_scale(scale)
        super().__init__(denoiser)


class SelfConditioningGuidance(GuidedDenoiser):
    """A self-conditioned denoiser guided away from itself without its self-conditioning input.

    A `DenoiserWrapper`. w = 1 makes one plain call, so it equals unguided sampling exactly;
    any other w makes one batched call of 2B rows (with the sampler's self-conditioning input
    and with zeros).

    Args:
        denoiser: a denoiser trained with self-conditioning (model.self_condition=true),
            or a wrapper of one (classifier-free guidance).
        scale: w ≥ 0.

    Raises:
        ValueError: a denoiser without self-conditioning, or a negative or non-finite w.
    """

    def __init__(self, denoiser: Denoiser | DenoiserWrapper, scale: float) -> None:
        if not getattr(denoiser, "self_conditioning", False):
            raise ValueError(
                "self-conditioning guidance needs a run trained with self-conditioning "
                "(--set model.self_condition=true)"
            )
        super().__init__(denoiser, scale)

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, *, cond: Any = None, self_cond: torch.Tensor | None = None
    ) -> Prediction:
        # Before the first draft (self_cond None or zeros) both halves would be the same call.
        if self.scale == 1.0 or self_cond is None or not self_cond.any():
            return self.denoiser(x_t, t, cond=cond, self_cond=self_cond)
        both = self.denoiser(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            cond=None if cond is None else torch.cat([cond, cond]),
            self_cond=torch.cat([self_cond, torch.zeros_like(self_cond)]),
        )
        strong, weak = both.halves()
        return extrapolate(self.denoiser, strong, weak, self.scale)
