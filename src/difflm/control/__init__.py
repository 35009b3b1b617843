"""Controllable generation: constraints on the latent and the gradient guidance that enforces them.

    import difflm
    from difflm import control
    pipe = difflm.load("runs/demo")
    length = control.Length(10, max_len=pipe.config.data.max_len)
    zizzi = control.Keywords(["Zizzi"], pipe.vocab)
    texts = control.sample(pipe, [length, zizzi], n=8, steps=50)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from difflm.control.classifier_constraints import POS, Attribute, ClassifierConstraint, Span, Tree
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

if TYPE_CHECKING:
    from difflm.pipeline import Pipeline

__all__ = [
    "FACTORIES",
    "OPTIMIZERS",
    "POS",
    "Attribute",
    "Checkable",
    "ClassifierConstraint",
    "Constraint",
    "FixesPositions",
    "GradientGuidance",
    "Infill",
    "Keywords",
    "Length",
    "Span",
    "SpecContext",
    "Tree",
    "generate",
    "parse_constraint_args",
    "sample",
]


def generate(
    pipe: Pipeline,
    constraints: Sequence[Constraint],
    n: int,
    *,
    sampler: str = "ddpm",
    steps: int = 50,
    seed: int | None = 0,
    sampler_options: Mapping[str, Any] | None = None,
    **guidance_settings: Any,
) -> SampleOutput:
    """Sample n sequences from a diffusion run under gradient guidance.

    One generator, seeded by `seed`, drives x_T, every sampler step's noise and the
    overwrite hooks' noise, so a seed reproduces the whole run.

    Args:
        pipe: a loaded diffusion run.
        constraints: combined as Σ_c w_c·log p(c | x).
        n: number of sequences.
        sampler: a registered sampler; the default "ddpm" is the ancestral step that
            Diffusion-LM guides (its DDIM with η = 1).
        steps: sampling steps K ≤ T.
        seed: None draws a fresh seed.
        sampler_options: further sampler options (eta, clamp_from, ...).
        **guidance_settings: keyword arguments of `GradientGuidance` (steps is
            `guidance_steps` here, to keep it apart from the sampler's).

    Returns:
        The sampler's output with the known positions' tokens fixed and nfe counting
        the guidance's denoiser evaluations too.

    Raises:
        ValueError: an autoregressive run, n < 1, or a bad setting.
    """
    if pipe.is_autoregressive:
        raise ValueError("this run is an autoregressive LM: guidance needs a diffusion run")
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    settings = dict(guidance_settings)
    if "guidance_steps" in settings:
        settings["steps"] = settings.pop("guidance_steps")
    generator = torch.Generator(device=pipe.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    guidance = GradientGuidance(pipe.model, constraints, generator=generator, **settings)
    shape = (n, pipe.config.data.max_len, pipe.config.model.embed_dim)
    output = get_sampler(sampler)(
        pipe.model, shape, steps=steps, generator=generator, guidance=guidance, **dict(sampler_options or {})
    )
    return guidance.finalize(output)


def sample(pipe: Pipeline, constraints: Sequence[Constraint], n: int = 8, **options: Any) -> list[str]:
    """Like `generate`, decoded to sentences."""
    return pipe.decode(generate(pipe, constraints, n, **options).tokens)
