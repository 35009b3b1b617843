"""Samplers of masked diffusion (`diffusion/masking.py`): K steps from an all-masked row to words.

Both take a canvas whose blanks are masks, with the signature of `sampling/tokens.py`.

- `ancestral`: MDLM's reverse process on the times t_k = 1 − k/K. From t to s each masked
  position is revealed with probability (t − s)/t, with a word drawn from p_θ(x_i | z_t);
  at s = 0 every position left is revealed. The network takes no time, so a step that
  revealed nothing reuses the last call's logits (MDLM's caching): nfe counts real calls.
- `confidence`: LLaDA's low-confidence remasking. Each step draws a word for every masked
  position and keeps those at the positions the network is most sure of (its largest
  p_θ there; LLaDA's score at τ = 0, where the drawn word is the argmax), as many as the
  same schedule reveals on average; the rest stay masked. Scoring positions, not the drawn
  words, keeps the draw unbiased: revealing one position a step is then an exact
  any-order factorization.
"""

from __future__ import annotations

import torch

from difflm.diffusion.masking import reveal_prob
from difflm.sampling.tokens import Network, TokenSampler, check_canvas, draw, word_probs


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
    """MDLM's ancestral sampler with caching (module docstring)."""
    check_canvas(canvas, steps, temperature)
    z, logits, calls = canvas.clone(), None, 0
    for k in range(steps):
        t, s = 1 - k / steps, 1 - (k + 1) / steps
        masked = z == mask_id
        if not masked.any():
            break
        if logits is None:
            logits, calls = network(z, t), calls + 1
        u = torch.rand(z.shape, generator=generator, device=generator.device if generator else z.device)
        reveal = masked & (u.to(z.device) < reveal_prob(t, s))
        if reveal.any():
            z = torch.where(reveal, draw(word_probs(logits, allowed, temperature), generator), z)
            logits = None  # the row changed: the next step needs a fresh call
    return z, calls


@torch.no_grad()
def confidence(
    network: Network,
    canvas: torch.Tensor,
    *,
    mask_id: int,
    steps: int,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """Low-confidence remasking (module docstring)."""
    check_canvas(canvas, steps, temperature)
    z, calls = canvas.clone(), 0
    total = (z == mask_id).sum(1)  # [B]
    for k in range(steps):
        masked = z == mask_id
        if not masked.any():
            break
        # Revealed after step k on the schedule: total·(1 − s), s = 1 − (k + 1)/K.
        target = torch.div(total * (k + 1) + steps - 1, steps, rounding_mode="floor")  # ⌈total·(k+1)/K⌉
        count = target - (total - masked.sum(1))
        logits = network(z, 1 - k / steps)
        words = draw(word_probs(logits, allowed, temperature), generator)
        sure = word_probs(logits, allowed, 1.0).amax(-1)
        calls += 1
        score = sure.masked_fill(~masked, -1.0)
        order = score.argsort(1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(z.shape[1], device=z.device).expand_as(order))
        z = torch.where(masked & (rank < count[:, None]), words, z)
    return z, calls


MASKED_SAMPLERS: dict[str, TokenSampler] = {"ancestral": ancestral, "confidence": confidence}
#: The sampler and word temperature of a masked run unless told otherwise. Like the continuous
#: model's x̂0 temperature, a sharpened draw trades diversity for well-formed rows
#: (docs/benchmarks.md, "Masked diffusion").
MASKED_SAMPLER = "confidence"
MASKED_TEMPERATURE = 0.3
