"""Word embeddings EMB and the rounding head p(w | x0) tied to them.

Notation (Diffusion-LM §4.1): EMB(w) ∈ R^d is the learned vector of word w;
q(x0 | w) = N(EMB(w), σ0² I) lifts a sentence into the continuous space and
p(w | x0) = softmax(x0 · EMBᵀ) rounds it back (logits are dot products with the
same matrix, so the rounding head has no parameters of its own).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class WordEmbedding(nn.Module):
    """EMB: a [V, d] table, optionally with rows kept at norm √d.

    Normalised rows (CDCD/Plaid, Difformer) stop the end-to-end objective from
    shrinking or inflating the embeddings relative to the unit-variance noise;
    the norm √d keeps each entry at unit scale, like the paper's N(0, 1) init.
    """

    def __init__(self, vocab_size: int, dim: int, *, normalize: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, dim))  # N(0, 1) as in the paper
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def table(self) -> torch.Tensor:
        """The effective embedding matrix EMB, [V, d]."""
        if not self.normalize:
            return self.weight
        return self.weight * (math.sqrt(self.dim) / self.weight.norm(dim=-1, keepdim=True).clamp_min(1e-8))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """EMB(w): ids [B, L] -> vectors [B, L, d]."""
        return nn.functional.embedding(ids, self.table())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Rounding logits log p(w | x) up to a constant: x [B, L, d] -> [B, L, V]."""
        return x @ self.table().t()

    def gaussian_scores(self, x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        """log N(x; scale·EMB(w), I) + const for every word w: [B, L, d] -> [B, L, V].

        −‖x − s·e‖²/2 = s·x·e − s²‖e‖²/2 − ‖x‖²/2, and ‖x‖² is the same for every word.
        """
        table = self.table()
        return scale * (x @ table.t()) - scale**2 * (table * table).sum(-1) / 2

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Ids of the nearest embedding in L2 distance: [B, L, d] -> [B, L]."""
        return self.gaussian_scores(x, 1.0).argmax(-1)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """The clamping trick: snap each vector to its nearest word embedding."""
        return self(self.nearest(x))
