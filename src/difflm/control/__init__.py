"""Controllable generation: constraints on the latent and the gradient guidance that enforces
them, and classifier-free guidance for runs trained with a condition.

    import difflm
    from difflm import control
    pipe = difflm.load("runs/demo")
    length = control.Length(10, max_len=pipe.config.data.max_len)
    zizzi = control.Keywords(["Zizzi"], pipe.vocab)
    texts = control.sample(pipe, [length, zizzi], n=8, steps=50)
    # a run trained with --set model.condition=slots:
    texts = control.sample(pipe, [], n=8, condition={"food": "Italian"}, cfg_scale=3)
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from difflm.control.classifier_constraints import POS, Attribute, ClassifierConstraint, Span, Tree
from difflm.control.classifier_free import ClassifierFreeGuidance, Expresses, condition_of
from difflm.control.constraints import (
    FACTORIES,
    Checkable,
    Infill,
    Keywords,
    Length,
    SpecContext,
    parse_constraint_args,
)
from difflm.control.guidance import OPTIMIZERS, Constraint, FixesPositions, GradientGuidance
from difflm.sampling import get_sampler
from difflm.sampling.base import SampleOutput
from difflm.sampling.rounding import SAMPLING_TEMPERATURE

if TYPE_CHECKING:
    from difflm.pipeline import Pipeline

__all__ = [
    "FACTORIES",
    "OPTIMIZERS",
    "POS",
    "Attribute",
    "Checkable",
    "ClassifierConstraint",
    "ClassifierFreeGuidance",
    "Constraint",
    "Expresses",
    "FixesPositions",
    "GradientGuidance",
    "Infill",
    "Keywords",
    "Length",
    "Span",
    "SpecContext",
    "Tree",
    "condition_of",
    "generate",
    "parse_constraint_args",
    "sample",
]


def generate(
    pipe: Pipeline,
    constraints: Sequence[Constraint],
    n: int,
    *,
    condition: Mapping[str, str] | Iterable[str] | str | None = None,
    cfg_scale: float = 1.0,
    sampler: str = "ddpm",
    steps: int = 50,
    seed: int | None = 0,
    sampler_options: Mapping[str, Any] | None = None,
    **guidance_settings: Any,
) -> SampleOutput:
    """Sample n sequences from a diffusion run under gradient guidance, classifier-free guidance, or both.

    One generator, seeded by `seed`, drives x_T, every sampler step's noise and the
    overwrite hooks' noise, so a seed reproduces the whole run.

    With a `condition`, the sampler and the constraints all read the classifier-free
    guided prediction f̃ = f(∅) + w·(f(c) − f(∅)) (`ClassifierFreeGuidance`).

    Args:
        pipe: a loaded diffusion run.
        constraints: combined as Σ_c w_c·log p(c | x); may be empty when a condition is given.
        n: number of sequences.
        condition: slot values for classifier-free guidance, {"food": "Italian"},
            ["food=Italian"] or "food=Italian"; needs a run trained with model.condition=slots.
        cfg_scale: w ≥ 0 (0 unconditional, 1 plain conditional sampling, > 1 stronger).
        sampler: a registered sampler; the default "ddpm" is the ancestral step that
            Diffusion-LM guides (its DDIM with η = 1).
        steps: sampling steps K ≤ T.
        seed: None draws a fresh seed.
        sampler_options: further sampler options (temperature, default
            `SAMPLING_TEMPERATURE` as in `Pipeline.generate`; eta, clamp_from, ...).
        **guidance_settings: keyword arguments of `GradientGuidance` (steps is
            `guidance_steps` here, to keep it apart from the sampler's).

    Returns:
        The sampler's output with the known positions' tokens fixed and nfe counting every
        network evaluation per sample (the guidance's, and both halves of a CFG call).

    Raises:
        ValueError: an autoregressive run, n < 1, neither constraints nor a condition,
            guidance settings without a constraint, or a bad setting (see
            `GradientGuidance`, `ClassifierFreeGuidance`, `condition_of`).
    """
    if pipe.is_autoregressive:
        raise ValueError("this run is an autoregressive LM: guidance needs a diffusion run")
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if condition is None and cfg_scale != 1.0:
        raise ValueError(f"cfg_scale={cfg_scale!r} needs a condition (slot values) to guide towards")
    if not constraints and condition is None:
        raise ValueError("nothing to control: give at least one constraint or a condition")
    settings = dict(guidance_settings)
    if "guidance_steps" in settings:
        settings["steps"] = settings.pop("guidance_steps")
    if settings and not constraints:
        raise ValueError(f"gradient guidance settings ({', '.join(sorted(settings))}) need a constraint")
    denoiser = pipe.model
    if condition is not None:
        denoiser = ClassifierFreeGuidance(pipe.model, condition_of(pipe, condition), cfg_scale)
    generator = torch.Generator(device=pipe.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    guidance = GradientGuidance(denoiser, constraints, generator=generator, **settings) if constraints else None
    shape = (n, pipe.config.data.max_len, pipe.config.model.embed_dim)
    options = {"temperature": SAMPLING_TEMPERATURE, **(sampler_options or {})}
    output = get_sampler(sampler)(denoiser, shape, steps=steps, generator=generator, guidance=guidance, **options)
    if guidance is not None:
        output = guidance.finalize(output)
    if isinstance(denoiser, ClassifierFreeGuidance):
        output = replace(output, nfe=denoiser.evaluations)  # sampler and guidance calls, both CFG halves
    return output


def sample(pipe: Pipeline, constraints: Sequence[Constraint], n: int = 8, **options: Any) -> list[str]:
    """Like `generate`, decoded to sentences."""
    return pipe.decode(generate(pipe, constraints, n, **options).tokens)
