"""Samplers: one free function per algorithm, all with the signature of `base.py`."""

from __future__ import annotations

from collections.abc import Callable

from difflm.sampling import consistency, ddim, ddpm, distilled, dpm_solver, masked, meanflow, shortcut, sweep, uniform
from difflm.sampling.base import SampleOutput
from difflm.sampling.tokens import TokenSampler

Sampler = Callable[..., SampleOutput]

#: The sampler and step count of every way of sampling through `difflm.pipeline` (the CLI,
#: `difflm.load(RUN).sample()`, `difflm control`, the demo); the x̂0 temperature is
#: `rounding.SAMPLING_TEMPERATURE`. DDPM is the ancestral step Diffusion-LM guides.
DEFAULT_SAMPLER = "ddpm"
DEFAULT_STEPS = 50

SAMPLERS: dict[str, Sampler] = {
    "ddpm": ddpm.sample,
    "ddim": ddim.sample,
    "dpm++2m": dpm_solver.sample,
    "shortcut": shortcut.sample,
    "meanflow": meanflow.sample,
    "consistency": consistency.sample,
    "distilled": distilled.sample,
    "sweep": sweep.sample,
}


#: The samplers of discrete diffusion by model kind (`sampling/tokens.py`), and each kind's
#: default sampler and word temperature.
TOKEN_SAMPLERS: dict[str, dict[str, TokenSampler]] = {
    "masked": masked.MASKED_SAMPLERS,
    "uniform": uniform.UNIFORM_SAMPLERS,
}
TOKEN_DEFAULTS: dict[str, tuple[str, float]] = {
    "masked": (masked.MASKED_SAMPLER, masked.MASKED_TEMPERATURE),
    "uniform": (uniform.UNIFORM_SAMPLER, uniform.UNIFORM_TEMPERATURE),
}


def get_sampler(name: str) -> Sampler:
    """The `sample` function registered under `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid choices: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
