"""The network of masked diffusion: p_θ(x_i | z) for every position of a partly masked row.

Shapes: B batch, L positions, H hidden, V vocabulary. z [B, L] holds word ids and the mask
id V (`MaskedDenoiser.mask_id`, one past the vocabulary, so vocabularies stay as they are).
The transformer is the denoiser's, bidirectional, reading token embeddings instead of noisy
vectors. It is told no time: under masking the visible tokens say all a time would (MDLM),
and a step that reveals nothing can reuse the last call's output.

A conditioned model (`model.condition=slots`) adds a projection of c [B, P], the multi-hot
of each row's slot values, at every position; c = 0 is the null condition ∅ of
classifier-free guidance, as for the continuous denoiser.

Under length anchors (`diffusion.length_anchors`) a row's END and PAD tail are never masked,
as for the continuous model, so the network learns p(x | n) and the sampler draws n from
the training sentences' word counts (`lengths`, saved with the weights).
"""

from __future__ import annotations

import torch
from torch import nn

from difflm.config import ModelConfig
from difflm.model.encoder import transformer_encoder


class MaskedDenoiser(nn.Module):
    """z [B, L] -> word logits [B, L, V] (never the mask)."""

    lengths: torch.Tensor | None  # a buffer under length anchors

    def __init__(
        self, config: ModelConfig, vocab_size: int, max_len: int, length_anchors: bool = False, num_conditions: int = 0
    ) -> None:
        super().__init__()
        if (config.condition != "none") != (num_conditions > 0):
            raise ValueError(f"model.condition={config.condition} does not fit {num_conditions} condition labels")
        self.config, self.max_len, self.vocab_size = config, max_len, vocab_size
        self.mask_id = vocab_size
        h = config.hidden
        self.embed = nn.Embedding(vocab_size + 1, h)
        self.pos = nn.Parameter(torch.randn(max_len, h) * 0.02)
        self.in_norm = nn.LayerNorm(h)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = transformer_encoder(h, config.heads, config.layers, config.dropout)
        self.out_norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab_size)
        self.num_conditions = num_conditions
        self.cond_proj = nn.Linear(num_conditions, h, bias=False) if num_conditions else None
        self.register_buffer("lengths", torch.zeros(max_len - 1) if length_anchors else None)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Word logits [B, L, V] of z [B, L], given the condition cond [B, P] (None: ∅)."""
        if z.ndim != 2 or z.shape[1] > self.max_len:
            raise ValueError(f"z must be [B, L ≤ {self.max_len}] token ids, got {list(z.shape)}")
        h = self.embed(z) + self.pos[: z.shape[1]]
        if cond is not None:
            if self.cond_proj is None:
                raise ValueError("this model was trained without a conditioning signal (cond)")
            h = h + self.cond_proj(cond.to(h.dtype))[:, None, :]
        h = self.encoder(self.dropout(self.in_norm(h)))
        return self.head(self.out_norm(h)).float()
