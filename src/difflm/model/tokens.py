"""The network of discrete diffusion: p_θ(x_i | z) for every position of a noised row of words.

Shapes: B batch, L positions, H hidden, V vocabulary. z [B, L] holds token ids. The
transformer is the continuous denoiser's, bidirectional, reading token embeddings instead of
noisy vectors. One class serves both forward processes (`noise`):

- `masked` (MDLM, `diffusion/masking.py`): z also holds the mask id V (`mask_id`, one past the
  vocabulary, so vocabularies stay as they are). The network is told no time: the visible
  tokens say all a time would, and a step that reveals nothing can reuse the last call's output.
- `uniform` (UDLM, `diffusion/uniform.py`): z holds words only, any of which may be noise, so
  the network is told t, embedded as the continuous denoiser embeds it. `mask_id` then only
  marks, on a sampler's canvas, the positions still to be written. The prediction the
  posterior needs is x_θ,i = p(x_i | z_t without position i); the network's softmax models
  p(x_i | z_t), own token included, and the forward pass divides out that token's likelihood,
  x_θ,i ∝ p(x_i | z_t)/q(z_t,i | x_i), exact at the optimum (Bayes). So the network may copy
  its input where the input is probably clean, rather than learn to look away from it.

A conditioned model (`model.condition=slots`) adds a projection of c [B, P], the multi-hot
of each row's slot values, at every position (`model.condition=source`: the source's ids are
a clean prefix of the sequence, `model/source.py`); c = 0 is the null condition ∅ of
classifier-free guidance, as for the continuous denoiser.

Under length anchors (`diffusion.length_anchors`) a row's END and PAD tail are never noised,
as for the continuous model, so the network learns p(x | n) and the sampler draws n from
the training sentences' word counts (`lengths`, saved with the weights).

With contextual rounding (`rounding.kind=contextual` and `rounding.discrete`) the network
carries the continuous denoiser's decoder p(w_i | w_<i, memory) (`model/contextual.py`): the
memory is its last hidden states at a noised row z_{t_d}, and the decoder writes the words left
to right (`sampling/contextual.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from difflm.config import TOKEN_KINDS, ModelConfig, RoundingConfig
from difflm.diffusion.masking import mask_rows
from difflm.diffusion.uniform import log_likelihood_of_own, noise_rows
from difflm.model.anchors import anchors_of
from difflm.model.contextual import ContextualDecoder
from difflm.model.encoder import transformer_encoder
from difflm.model.features import TimeMLP
from difflm.model.source import SourcePrefix
from difflm.text.vocab import Vocab


class TokenDenoiser(nn.Module):
    """z [B, L] (and t [B] under uniform noise) -> word logits [B, L, V] (never the mask)."""

    lengths: torch.Tensor | None  # a buffer under length anchors

    def __init__(
        self,
        config: ModelConfig,
        vocab_size: int,
        max_len: int,
        length_anchors: bool = False,
        num_conditions: int = 0,
        noise: str = "masked",
        rounding: RoundingConfig | None = None,
    ) -> None:
        super().__init__()
        if noise not in TOKEN_KINDS:
            raise ValueError(f"noise must be one of {', '.join(TOKEN_KINDS)}, got {noise!r}")
        if (config.condition != "none") != (num_conditions > 0):
            raise ValueError(f"model.condition={config.condition} does not fit {num_conditions} condition labels")
        self.config, self.max_len, self.vocab_size, self.noise = config, max_len, vocab_size, noise
        self.mask_id = vocab_size
        h = config.hidden
        self.embed = nn.Embedding(vocab_size + (noise == "masked"), h)
        self.pos = nn.Parameter(torch.randn(max_len, h) * 0.02)
        self.time_mlp = TimeMLP(h, 4 * h) if noise == "uniform" else None
        self.in_norm = nn.LayerNorm(h)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder = transformer_encoder(h, config.heads, config.layers, config.dropout)
        self.out_norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab_size)
        self.num_conditions = num_conditions
        self.cond_proj = nn.Linear(num_conditions, h, bias=False) if config.condition == "slots" else None
        self.source = SourcePrefix(num_conditions, h) if config.condition == "source" else None
        self.register_buffer("lengths", torch.zeros(max_len - 1) if length_anchors else None)
        self.decoder = ContextualDecoder(rounding, config, vocab_size, max_len) if rounding is not None else None

    def forward(self, z: torch.Tensor, t: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Word logits [B, L, V] of the prediction x_θ(z) for z [B, L] at times t [B] (uniform
        noise only), given the condition cond [B, P] or the source ids [B, S] (None: ∅)."""
        logits = self.head(self.out_norm(self.hidden(z, t, cond))).float()
        if self.time_mlp is None:
            return logits
        assert t is not None
        return logits - log_likelihood_of_own(z, t, self.vocab_size)  # ÷ q(z_t,i | x_i = w)

    def hidden(self, z: torch.Tensor, t: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's last hidden states [B, L, H] at z (what the head and a contextual
        rounding decoder read); the arguments are those of `forward`."""
        if z.ndim != 2 or z.shape[1] > self.max_len:
            raise ValueError(f"z must be [B, L ≤ {self.max_len}] token ids, got {list(z.shape)}")
        if (t is None) != (self.time_mlp is None):
            raise ValueError(f"a {self.noise} denoiser takes {'no time' if self.time_mlp is None else 'a time t [B]'}")
        if cond is not None and self.cond_proj is None and self.source is None:
            raise ValueError("this model was trained without a conditioning signal (cond)")
        h = self.embed(z) + self.pos[: z.shape[1]]
        time: torch.Tensor | float = 0.0
        if self.time_mlp is not None:
            assert t is not None
            time = self.time_mlp.embed(t, h.dtype)
        h = h + time
        if cond is not None and self.cond_proj is not None:
            h = h + self.cond_proj(cond.to(h.dtype))[:, None, :]
        if self.source is None:
            return self.encoder(self.dropout(self.in_norm(h)))
        # The clean source as a prefix of the sequence, never masked or noised.
        prefix = self.source(self.embed(self.source.ids(cond, len(z), z.device))) + time
        return self.encoder(self.dropout(self.in_norm(torch.cat([prefix, h], 1))))[:, prefix.shape[1] :]

    def memory(self, z: torch.Tensor, t: torch.Tensor, *, cond: torch.Tensor | None = None) -> torch.Tensor:
        """What contextual rounding reads at a noised row z [B, L] of time t [B]: the hidden
        states [B, L, H] (a masked network is told no time; the decoder is)."""
        return self.hidden(z, t if self.time_mlp is not None else None, cond)

    def noisable(self, ids: torch.Tensor) -> torch.Tensor:
        """The positions [B, L] of rows ids [B, L] the forward process may change: all but START
        and, under length anchors, END and the PAD tail."""
        noisable = ids != Vocab.START_ID
        return noisable & ~anchors_of(ids) if self.lengths is not None else noisable

    def noised(
        self, ids: torch.Tensor, t: torch.Tensor, u: torch.Tensor, words: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z_t ~ q(z_t | x) of rows ids [B, L] at times t [B], from uniforms u [B, L] and, under
        uniform noise, uniformly drawn token ids `words` [B, L]."""
        if self.noise == "masked":
            return mask_rows(ids, t, u, self.noisable(ids), self.mask_id)
        if words is None:
            raise ValueError("uniform noise needs the token ids it draws (words)")
        return noise_rows(ids, t, u, words, self.noisable(ids))
