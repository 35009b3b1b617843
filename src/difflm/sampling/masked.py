"""Samplers of masked diffusion (`diffusion/masking.py`): K steps from an all-masked row to words.

Both take a canvas z [B, L]: the mask id where words are to be written and fixed tokens
elsewhere (START; a length's END and PAD; infilling's given words). A fixed token is never
changed, so those constraints are exact. `allowed` [L, V] (None: any word) limits the words
each position may take. One signature:

    sample(network, canvas, *, mask_id, steps, generator=None, allowed=None, temperature=1.0)
        -> (tokens [B, L], network calls)

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

from collections.abc import Callable

import torch

from difflm.diffusion.masking import reveal_prob
from difflm.sampling.autoguidance import check_scale
from difflm.sampling.grid import check_step_count
from difflm.sampling.rounding import check_temperature

Network = Callable[[torch.Tensor], torch.Tensor]  # z [B, L] -> logits [B, L, V]
MaskedSampler = Callable[..., tuple[torch.Tensor, int]]


def _draw(
    logits: torch.Tensor, allowed: torch.Tensor | None, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Words [B, L] drawn at temperature τ within `allowed`, and the network's largest
    probability at each position [B, L]."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed[: logits.shape[1]], float("-inf"))
    probs = logits.softmax(-1)
    if temperature == 0:
        words = probs.argmax(-1)
    else:
        tempered = (logits / temperature).softmax(-1)
        flat = tempered.reshape(-1, tempered.shape[-1])
        words = torch.multinomial(flat, 1, generator=generator).view(logits.shape[:2])
    return words, probs.amax(-1)


def _check(canvas: torch.Tensor, steps: int, temperature: float) -> None:
    check_step_count(steps)
    check_temperature(temperature)
    if canvas.ndim != 2:
        raise ValueError(f"the canvas must be [B, L] token ids, got {list(canvas.shape)}")


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
    _check(canvas, steps, temperature)
    z, logits, calls = canvas.clone(), None, 0
    for k in range(steps):
        t, s = 1 - k / steps, 1 - (k + 1) / steps
        masked = z == mask_id
        if not masked.any():
            break
        if logits is None:
            logits, calls = network(z), calls + 1
        u = torch.rand(z.shape, generator=generator, device=generator.device if generator else z.device)
        reveal = masked & (u.to(z.device) < reveal_prob(t, s))
        if reveal.any():
            words, _ = _draw(logits, allowed, temperature, generator)
            z = torch.where(reveal, words, z)
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
    _check(canvas, steps, temperature)
    z, calls = canvas.clone(), 0
    total = (z == mask_id).sum(1)  # [B]
    for k in range(steps):
        masked = z == mask_id
        if not masked.any():
            break
        # Revealed after step k on the schedule: total·(1 − s), s = 1 − (k + 1)/K.
        target = torch.div(total * (k + 1) + steps - 1, steps, rounding_mode="floor")  # ⌈total·(k+1)/K⌉
        count = target - (total - masked.sum(1))
        words, sure = _draw(network(z), allowed, temperature, generator)
        calls += 1
        score = sure.masked_fill(~masked, -1.0)
        order = score.argsort(1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(z.shape[1], device=z.device).expand_as(order))
        z = torch.where(masked & (rank < count[:, None]), words, z)
    return z, calls


class MaskedNetwork:
    """The masked model as the samplers call it: z [B, L] -> word log-probabilities [B, L, V],
    guided towards a condition c [P] with scale w when given (classifier-free guidance in its
    discrete form, Schiff et al. 2024: log p̃ = log p(x | z, ∅) + w·(log p(x | z, c) − log p(x | z, ∅)),
    renormalised by the samplers' softmax; w = 0 unconditional, 1 conditional). A guided call
    evaluates 2B rows (`rows_per_call`).
    """

    def __init__(self, model: Callable[..., torch.Tensor], cond: torch.Tensor | None = None, scale: float = 1.0):
        self.model, self.cond, self.scale = model, cond, check_scale(scale)
        self.rows_per_call = 1 if cond is None or scale == 1.0 else 2

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.cond is None:
            return self.model(z).log_softmax(-1)
        c = self.cond.expand(len(z), -1)
        if self.rows_per_call == 1:
            return self.model(z, c).log_softmax(-1)
        both = self.model(torch.cat([z, z]), torch.cat([c, torch.zeros_like(c)])).log_softmax(-1)
        conditional, null = both.chunk(2)
        return null + self.scale * (conditional - null)


@torch.no_grad()
def place_words(network: Network, canvas: torch.Tensor, words: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The canvas [B, L] with each of `words` [K] fixed at the masked position where one call on
    the canvas finds it most likely (in the given order, one position each), so the samplers
    keep it: how a masked run writes keywords exactly.

    Raises:
        ValueError: a row with fewer masked positions than words.
    """
    if int((canvas == mask_id).sum(1).min()) < len(words):
        raise ValueError(f"{len(words)} required words do not fit the masked positions of every row")
    z = canvas.clone()
    logp = network(z).log_softmax(-1)  # [B, L, V]
    rows = torch.arange(len(z), device=z.device)
    for word in words.tolist():
        where = logp[..., word].masked_fill(z != mask_id, float("-inf")).argmax(1)
        z[rows, where] = word
    return z


MASKED_SAMPLERS: dict[str, MaskedSampler] = {"ancestral": ancestral, "confidence": confidence}
#: The sampler and word temperature of a masked run unless told otherwise. Like the continuous
#: model's x̂0 temperature, a sharpened draw trades diversity for well-formed rows
#: (docs/benchmarks.md, "Masked diffusion").
MASKED_SAMPLER = "confidence"
MASKED_TEMPERATURE = 0.3
