"""Length anchors: a row's END and the PAD positions after it, held clean at every noise level.

Notation: w word ids [B, L] (START w_1 … w_n END PAD …); n a row's word count. With
`diffusion.length_anchors` the denoiser is trained and sampled on

    x_t[n + 1] = EMB(END),  x_t[i] = EMB(PAD) for i > n + 1      (the row's anchors)
    x_t[i] = √ᾱ_t·x0[i] + √(1 − ᾱ_t)·ε[i]                        otherwise

so it models p(w | n) rather than p(w): the anchors tell it where the sentence ends
(clean tokens as anchors, as in DiffuSeq's clean source). The clean END matters: a row cut
to its own length has no PAD left, and without a clean token at its end the denoiser must
guess the length from the width of its input, which it does badly (its sentences ran past
n and were cut mid-phrase).

A sampler draws n from the training sentences' lengths, n ~ p_data(n), kept in the denoiser
(`Denoiser.lengths`), so samples are as long as human ones by construction; Diffusion-LM
without anchors must place END itself and, at a low x̂0 temperature, ends early.
"""

from __future__ import annotations

import torch

from difflm.model.embedding import WordEmbedding
from difflm.text.vocab import Vocab


def anchors_of(ids: torch.Tensor) -> torch.Tensor:
    """The anchored positions [B, L] of word rows ids [B, L]: their END and PAD tail."""
    return (ids == Vocab.END_ID) | (ids == Vocab.PAD_ID)


def tail(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """The anchored positions [B, L] of rows of n words each, lengths [B]: i ≥ n + 1."""
    return torch.arange(max_len, device=lengths.device)[None, :] > lengths[:, None]


def anchor_ids(anchors: torch.Tensor) -> torch.Tensor:
    """The words [B, L] the anchored positions [B, L] hold: END at each row's first, PAD after
    it (and PAD, unused, where a row is not anchored)."""
    first = anchors & (anchors.cumsum(1) == 1)
    return torch.where(first, Vocab.END_ID, Vocab.PAD_ID)


def anchor(x: torch.Tensor, anchors: torch.Tensor, embedding: WordEmbedding) -> torch.Tensor:
    """x [B, L, d] with the anchors' clean embeddings (`anchor_ids`) at the anchored positions."""
    return torch.where(anchors[..., None], embedding(anchor_ids(anchors)).to(x.dtype), x)


def word_counts(ids: torch.Tensor, max_len: int) -> torch.Tensor:
    """How many rows of ids [N, L] have n words, for n = 0 … L − 2: [L − 1] (float)."""
    n = (ids != Vocab.PAD_ID).sum(1) - 2  # less START and END
    return torch.bincount(n.clamp(min=0), minlength=max_len - 1)[: max_len - 1].float()


def draw_lengths(counts: torch.Tensor, n: int, most: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n word counts [n] drawn from the histogram counts [L − 1], at most `most` words.

    Raises:
        ValueError: no training sentence has at most `most` words.
    """
    weights = counts[: most + 1].double()
    if not bool((weights > 0).any()):
        raise ValueError(f"no training sentence has at most {most} words: sample with more positions")
    device = generator.device if generator is not None else weights.device
    drawn = torch.multinomial(weights.to(device), n, replacement=True, generator=generator)
    return drawn.to(counts.device)


def width_groups(anchors: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """The rows of anchors [B, L] grouped by the positions they use, START … END: a list of
    (row indices, width). A group cut to its width keeps only its END anchor, as the
    length-bucketed batches the denoiser trained on (`train.length_pool`) had next to no PAD."""
    widths = (~anchors).sum(1) + 1
    return [(torch.nonzero(widths == w).flatten(), int(w)) for w in widths.unique().tolist()]
