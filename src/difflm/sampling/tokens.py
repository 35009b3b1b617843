"""What the samplers of discrete diffusion share (`sampling/masked.py`, `sampling/uniform.py`).

A sampler takes a canvas z [B, L]: the blank id (the model's `mask_id`, one past the
vocabulary) where words are to be written, and fixed tokens elsewhere (START; a length's END
and PAD; infilling's given words). A fixed token is never changed, so those constraints are
exact. `allowed` [L, V] or per row [B, L, V] (None: any word) limits the words each position
may end with. One signature:

    sample(network, canvas, *, mask_id, steps, generator=None, allowed=None, temperature=1.0)
        -> (tokens [B, L], network calls)

`network(z, t)` returns word log-probabilities [B, L, V] of a row z at time t ∈ [0, 1]
(`TokenNetwork`; a masked model ignores t).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from difflm.sampling.autoguidance import check_scale
from difflm.sampling.base import Callback, StepInfo
from difflm.sampling.grid import check_step_count
from difflm.sampling.rounding import check_temperature
from difflm.text.vocab import Vocab, without_unk

Network = Callable[[torch.Tensor, float], torch.Tensor]  # z [B, L], t -> log-probabilities [B, L, V]
TokenSampler = Callable[..., tuple[torch.Tensor, int]]


def word_probs(logits: torch.Tensor, allowed: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """softmax(logits/τ) [B, L, V] within `allowed` ([≥ L, V] or [B, ≥ L, V]), never <unk> where
    another word is allowed (`without_unk`); τ = 0: the one-hot argmax."""
    if allowed is not None:
        logits = logits.masked_fill(~allowed[..., : logits.shape[1], :], float("-inf"))
    logits = without_unk(logits)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return (logits / temperature).softmax(-1)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token [B, L] from each position's distribution probs [B, L, V]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:2]).to(probs.device)


def check_canvas(canvas: torch.Tensor, steps: int, temperature: float) -> None:
    check_step_count(steps)
    check_temperature(temperature)
    if canvas.ndim != 2:
        raise ValueError(f"the canvas must be [B, L] token ids, got {list(canvas.shape)}")


class TokenNetwork:
    """A token denoiser (`model/tokens.py`) as the samplers call it: z [B, L], t -> word
    log-probabilities [B, L, V], guided towards a condition c [P] (or one per row, [B, P]; the
    source ids of a source-conditioned run) with scale w when given
    (classifier-free guidance in its discrete form, Schiff et al. 2024: log p̃ = log p(x | z, ∅)
    + w·(log p(x | z, c) − log p(x | z, ∅)), renormalised by the samplers; w = 0 unconditional,
    1 conditional). A guided call evaluates 2B rows (`rows_per_call`).
    """

    def __init__(self, model: Callable[..., torch.Tensor], cond: torch.Tensor | None = None, scale: float = 1.0):
        self.model, self.cond, self.scale = model, cond, check_scale(scale)
        self.timed = getattr(model, "time_mlp", None) is not None  # uniform noise: the model reads t
        self.rows_per_call = 1 if cond is None or scale == 1.0 else 2

    def rows(self, index: torch.Tensor) -> TokenNetwork:
        """The network of some of the rows: a condition given per row [B, P] is cut to them."""
        cond = self.cond if self.cond is None or self.cond.dim() == 1 else self.cond[index]
        return TokenNetwork(self.model, cond, self.scale)

    def __call__(self, z: torch.Tensor, t: float) -> torch.Tensor:
        times = torch.full((len(z),), t, device=z.device) if self.timed else None
        if self.cond is None:
            return self.model(z, times).log_softmax(-1)
        c = self.cond.expand(len(z), -1)
        if self.rows_per_call == 1:
            return self.model(z, times, cond=c).log_softmax(-1)
        both_times = None if times is None else torch.cat([times, times])
        both = self.model(torch.cat([z, z]), both_times, cond=torch.cat([c, torch.zeros_like(c)])).log_softmax(-1)
        conditional, null = both.chunk(2)
        return null + self.scale * (conditional - null)


@torch.no_grad()
def place_words(
    network: Network, canvas: torch.Tensor, words: torch.Tensor, mask_id: int, z: torch.Tensor | None = None
) -> torch.Tensor:
    """The canvas [B, L] with each of `words` [K] fixed at the blank where one call on the row
    at t = 1 finds it most likely (in the given order, one position each), so the samplers
    keep it: how a discrete run writes keywords exactly. z is that row (default: the canvas
    itself, as under masking; under uniform noise its blanks hold noise).

    Raises:
        ValueError: a row with fewer blanks than words.
    """
    if int((canvas == mask_id).sum(1).min()) < len(words):
        raise ValueError(f"{len(words)} required words do not fit the masked positions of every row")
    placed = canvas.clone()
    logp = network(canvas if z is None else z, 1.0)  # [B, L, V]
    rows = torch.arange(len(placed), device=placed.device)
    for word in words.tolist():
        where = logp[..., word].masked_fill(placed != mask_id, float("-inf")).argmax(1)
        placed[rows, where] = word
    return placed


def open_until(
    allowed: torch.Tensor | None, placed: torch.Tensor, canvas: torch.Tensor, mask_id: int, vocab_size: int
) -> torch.Tensor:
    """Per row [B, L, V]: `allowed` ([L, V]; None: any word) with END and PAD barred before the
    last word `place_words` put into the canvas [B, L] (placed [B, L]), so that no row ends
    before its keywords: decoding stops at the first END."""
    B, L = canvas.shape
    new = (placed != canvas) & (canvas == mask_id)
    last = torch.where(new, torch.arange(L, device=canvas.device), -1).amax(1)  # [B]
    rows = torch.ones(L, vocab_size, dtype=torch.bool, device=canvas.device) if allowed is None else allowed
    rows = rows.expand(B, L, vocab_size).clone()
    early = torch.arange(L, device=canvas.device)[None] < last[:, None]  # [B, L]
    for ender in (Vocab.END_ID, Vocab.PAD_ID):
        rows[..., ender] &= ~early
    return rows


class StepReport:
    """Reports each network call of a discrete run to a step callback, so it can be watched
    as a continuous run is (`difflm serve`). x̂0 is the rows' words: what a row keeps (under
    masking its written words; under uniform noise its fixed ones, the rest being noise) and
    the network's most likely word elsewhere.

    A sample's rows may be written one length group at a time (`Pipeline._unmask`): each
    group's sampler calls `watch(network, group, fixed)`, whose steps count from 0 again, and
    each report shows every row (StepInfo.x: the rows as read, token ids [n, L] with blanks
    as `mask_id`; x0: their x̂0 as one-hot words [n, L, V], a row not yet started as PAD).
    """

    def __init__(self, callback: Callback, canvas: torch.Tensor, mask_id: int) -> None:
        self.callback, self.rows, self.mask_id = callback, canvas.clone(), mask_id
        self.shown = canvas.masked_fill(canvas == mask_id, Vocab.PAD_ID)

    def watch(self, network: Network, group: torch.Tensor, fixed: torch.Tensor | None = None) -> Network:
        """`network` for the rows `group`, reporting each call; `fixed` [B, w]: the positions a
        uniform-noise row keeps (None: a masked row's written words)."""
        step = 0

        def call(z: torch.Tensor, t: float) -> torch.Tensor:
            nonlocal step
            logp = network(z, t)
            width = z.shape[1]
            kept = z != self.mask_id if fixed is None else fixed
            self.rows[group, :width] = z
            self.shown[group, :width] = torch.where(kept, z, logp.argmax(-1))
            x0 = torch.nn.functional.one_hot(self.shown, logp.shape[-1]).to(logp.dtype)
            self.callback(StepInfo(step=step, t=t, x=self.rows.clone(), x0=x0))
            step += 1
            return logp

        return call

    def written(self, group: torch.Tensor, tokens: torch.Tensor) -> None:
        """A group's final words [len(group), width], shown from then on."""
        self.rows[group, : tokens.shape[1]] = tokens
        self.shown[group, : tokens.shape[1]] = tokens
