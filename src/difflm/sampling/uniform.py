"""The sampler of uniform diffusion (`diffusion/uniform.py`): K steps from a row of noise to words.

It takes a canvas whose blanks are the mask id, with the signature of `sampling/tokens.py`;
the blanks start as uniform noise (`prior`), the fixed tokens stay as they are.

- `ancestral`: UDLM's reverse process on the times t_k = 1 − k/K. Every blank position draws
  z_s from q(z_s | z_t, x_θ(z_t, t)), the posterior with the network's prediction plugged in
  (at temperature τ, within `allowed`). Any word may still change at every step; at s = 0
  the posterior keeps only words x_θ gives mass to, so `allowed` holds exactly.
"""

from __future__ import annotations

import torch

from difflm.diffusion.uniform import posterior
from difflm.sampling.tokens import Network, TokenSampler, check_canvas, draw, word_probs


def prior(canvas: torch.Tensor, mask_id: int, vocab_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """The canvas [B, L] at t = 1: each blank a token id drawn uniformly from the vocabulary."""
    device = generator.device if generator is not None else canvas.device
    noise = torch.randint(0, vocab_size, canvas.shape, generator=generator, device=device).to(canvas.device)
    return torch.where(canvas == mask_id, noise, canvas)


@torch.no_grad()
def ancestral(
    network: Network,
    canvas: torch.Tensor,
    *,
    mask_id: int,
    steps: int,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """UDLM's ancestral sampler (module docstring)."""
    check_canvas(canvas, steps, temperature)
    free = canvas == mask_id
    z = prior(canvas, mask_id, mask_id, generator)  # the vocabulary ends where the blank id begins
    for k in range(steps):
        t, s = 1 - k / steps, 1 - (k + 1) / steps
        x = word_probs(network(z, t), allowed, temperature)
        z = torch.where(free, draw(posterior(z, x, t, s), generator), z)
    return z, steps


UNIFORM_SAMPLERS: dict[str, TokenSampler] = {"ancestral": ancestral}
#: The sampler and word temperature of a uniform run unless told otherwise (docs/benchmarks.md,
#: "Uniform-noise diffusion").
UNIFORM_SAMPLER = "ancestral"
UNIFORM_TEMPERATURE = 0.5
