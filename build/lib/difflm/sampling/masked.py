"""Samplers of masked diffusion (`diffusion/masking.py`): K steps from an all-masked row to words.

Both take a canvas whose blanks are masks, with the signature of `sampling/tokens.py`.

- `ancestral`: MDLM's reverse process on the times t_k = 1 − k/K. From t to s each masked
  position is revealed with probability (t − s)/t, with a word drawn from p_θ(x_i | z_t);
  at s = 0 every position left is revealed. The network takes no time, so a step that
  revealed nothing reuses the last call's logits (MDLM's caching): nfe counts real calls.
- `confidence`: LLaDA's low-confidence remasking. Each step draws a word for every masked
  position and keeps those at the positions the network is most sure of, as many as the
  same schedule reveals on average; the rest stay masked. Sure means the largest margin
  between the two most probable words of p_θ there (Kim et al. 2025's top-2 margin): a
  position torn between two words waits for more context, where the largest probability
  alone (LLaDA's score at τ = 0) would reveal it as soon as both are likely. Scoring
  positions, not the drawn words, keeps the draw unbiased: revealing one position a step is
  then an exact any-order factorization.
- `gibbs`: Gibbs sampling with the masked model as the masked LM (Wang and Cho 2019). The
  first half of the K calls writes every blank with `confidence`; each later call masks a
  random `GIBBS_MASK_RATE` share of the written positions (at least one) of every row and
  redraws them from p_θ(x_i | the rest), the word temperature annealed linearly from 1 to
  τ. Masking one position a call is sequential Gibbs, which leaves p_θ's joint invariant
  when the conditionals agree (tested with the exact ones); more at once is the parallel
  variant, faster and approximate.
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
        top2 = word_probs(logits, allowed, 1.0).topk(2, dim=-1).values
        sure = top2[..., 0] - top2[..., 1]
        calls += 1
        z = torch.where(masked & _top(sure.masked_fill(~masked, -1.0), count), words, z)
    return z, calls


def _top(score: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The `count` [B] positions of each row with the highest score [B, L], as a mask [B, L]."""
    order = score.argsort(1, descending=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(score.shape[1], device=score.device).expand_as(order)
    )
    return rank < count[:, None]


#: The share of a row's written positions each Gibbs call masks and redraws (BERT's 15%).
GIBBS_MASK_RATE = 0.15


@torch.no_grad()
def gibbs_updates(
    network: Network,
    z: torch.Tensor,
    writable: torch.Tensor,
    *,
    mask_id: int,
    calls: int,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """`calls` Gibbs updates of the rows z [B, L] at their writable positions [B, L] (module docstring)."""
    size = (writable.sum(1).float() * GIBBS_MASK_RATE).round().clamp_min(1)  # [B]
    device = generator.device if generator is not None else z.device
    for j in range(calls):
        tau = 1 + (temperature - 1) * (j + 1) / calls if temperature < 1 else temperature
        score = torch.rand(z.shape, generator=generator, device=device).to(z.device)
        redraw = writable & _top(-score.masked_fill(~writable, 2.0), size)  # a random share of the writable
        masked = torch.where(redraw, mask_id, z)
        words = draw(word_probs(network(masked, 0.0), allowed, tau), generator)
        z = torch.where(redraw, words, z)
    return z


@torch.no_grad()
def gibbs(
    network: Network,
    canvas: torch.Tensor,
    *,
    mask_id: int,
    steps: int,
    generator: torch.Generator | None = None,
    allowed: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, int]:
    """Gibbs sampling after a confidence pass (module docstring)."""
    check_canvas(canvas, steps, temperature)
    first = (steps + 1) // 2
    z, calls = confidence(
        network, canvas, mask_id=mask_id, steps=first, generator=generator, allowed=allowed, temperature=temperature
    )
    writable = canvas == mask_id
    if not writable.any():
        return z, calls
    rest = steps - first
    z = gibbs_updates(
        network, z, writable, mask_id=mask_id, calls=rest, generator=generator, allowed=allowed, temperature=temperature
    )
    return z, calls + rest


MASKED_SAMPLERS: dict[str, TokenSampler] = {"ancestral": ancestral, "confidence": confidence, "gibbs": gibbs}
#: The sampler and word temperature of a masked run unless told otherwise. Like the continuous
#: model's x̂0 temperature, a sharpened draw trades diversity for well-formed rows
#: (docs/benchmarks.md, "Masked diffusion").
MASKED_SAMPLER = "confidence"
MASKED_TEMPERATURE = 0.3
