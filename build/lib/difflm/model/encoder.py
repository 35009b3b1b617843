"""The bidirectional transformer every non-causal network here is built on: the denoiser, the
masked denoiser and the latent classifiers."""

from __future__ import annotations

from torch import nn


def transformer_encoder(hidden: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    """Pre-LN blocks of width H = hidden with a 4H GELU MLP, batch first."""
    layer = nn.TransformerEncoderLayer(
        hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
    )
    # enable_nested_tensor only matters for padding masks, which we do not use.
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
