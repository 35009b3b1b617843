"""A source text as a clean prefix of the sequence (model.condition=source): data-to-text.

Notation: s the source's ids [B, S] (START s1 … END PAD…, data.source_len = S positions), h
the network's states. Every network of the library reads the source the same way, as
DiffuSeq's partial noising does (Gong et al. 2022): source and target share one sequence in
the same transformer, and only the target is noised.

    prefix = embed(s) + P_src          [B, S, H]    (its own learned positions)
    h      = transformer([prefix ; target states])  → the target's S: positions out

The source is never noised or masked and has no outputs, so no loss term reads it. The null
source ∅ is a row of PAD (id 0): a dropped condition (`objectives.base.drop_conditions`
multiplies by 0) and cond=None are the same input, as for slot conditions, so classifier-free
guidance works unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from difflm.text.vocab import Vocab


class SourcePrefix(nn.Module):
    """The source rows' prefix states [B, S, H] from their embeddings, and the source ids of a call.

    Args:
        width: S, positions of a source row.
        hidden: H.
        in_dim: the size of the embeddings it is given, when it is not H (a continuous
            denoiser's word embedding, d): they are projected to H.
    """

    def __init__(self, width: int, hidden: int, in_dim: int | None = None) -> None:
        super().__init__()
        self.width = width
        self.pos = nn.Parameter(torch.randn(width, hidden) * 0.02)
        self.proj = nn.Linear(in_dim, hidden) if in_dim and in_dim != hidden else None

    def ids(self, cond: torch.Tensor | None, B: int, device: torch.device) -> torch.Tensor:
        """The source ids [B, S] of a call: cond, or the null source (all PAD) for cond=None.

        Raises:
            ValueError: cond is not [B, S] token ids.
        """
        if cond is None:
            return torch.full((B, self.width), Vocab.PAD_ID, dtype=torch.long, device=device)
        if cond.is_floating_point() or tuple(cond.shape) != (B, self.width):
            raise ValueError(f"the source must be token ids [{B}, {self.width}], got {cond.dtype} {list(cond.shape)}")
        return cond

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        """embed(s) [B, S, in_dim or H] -> the prefix states [B, S, H]."""
        return (embedded if self.proj is None else self.proj(embedded)) + self.pos
