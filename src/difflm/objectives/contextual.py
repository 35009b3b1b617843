"""Contextual rounding's objective: the denoiser and its decoder, trained jointly.

Notation (`model/contextual.py`): w word ids [B, L]; x0 = EMB(w) + σ0·z as in the diffusion
objective; t_d ~ U[t_min, t_max] (`rounding` section); x_{t_d} = √ᾱ(t_d)·x0 + √(1 − ᾱ(t_d))·ε.

    L = L_e2e(f)                                              the denoiser, unchanged
      + weight · −log Π_i p(w_i | w_<i, sg f_hidden(x_{t_d}, t_d))     "contextual"

A masked or uniform run (`rounding.discrete`) adds the same term to its own objective, its
memory read at z_{t_d} ~ q(z_{t_d} | w), the row masked or noised by its forward process.

The memory is read under stop-gradient: the decoder learns to round what the denoiser
says, and the denoiser's own training is exactly Diffusion-LM's. t_d is drawn over a range
rather than fixed so that the decoder sees latents as clean as the sampler's last state and
noisier ones, whose words it must take from context.
"""

from __future__ import annotations

import torch

from difflm.config import Config
from difflm.diffusion import process
from difflm.model.anchors import anchor, anchors_of
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput
from difflm.objectives.diffusion import e2e_loss
from difflm.objectives.masked import masked_loss
from difflm.objectives.uniform import uniform_loss


def decoder_loss(
    denoiser: Denoiser, batch: Batch, config: Config, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """−log p(w | memory at x_{t_d}) per counted position, the memory read without gradient."""
    if denoiser.decoder is None:
        raise ValueError("this denoiser has no contextual rounding decoder (rounding.kind=contextual)")
    rc, ids = config.rounding, batch.ids
    draws = Draws(generator, ids.device)
    B = ids.shape[0]
    abar0 = denoiser.schedule.alpha_bar(torch.zeros(1, dtype=torch.float64)).item()
    emb = denoiser.embedding(ids)
    x0 = emb + (1 - abar0) ** 0.5 * draws.randn(tuple(emb.shape))
    t = rc.t_min + (rc.t_max - rc.t_min) * draws.rand(B)
    abar = denoiser.schedule.alpha_bar(t.double()).to(x0)[:, None, None]
    x_t = process.q_sample(x0, abar, draws.randn(tuple(emb.shape)))
    if denoiser.lengths is not None:
        x_t = anchor(x_t, anchors_of(ids), denoiser.embedding)
    with torch.no_grad():
        memory = denoiser.memory(x_t, t, cond=batch.cond)
    return denoiser.decoder.loss(ids, memory, t)


def token_decoder_loss(
    model: TokenDenoiser, batch: Batch, config: Config, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """−log p(w | memory at z_{t_d}) per counted position, the memory read without gradient."""
    if model.decoder is None:
        raise ValueError("this network has no contextual rounding decoder (rounding.discrete=true)")
    rc, ids = config.rounding, batch.ids
    draws = Draws(generator, ids.device)
    B, L = ids.shape
    t = rc.t_min + (rc.t_max - rc.t_min) * draws.rand(B)
    words = draws.randint(0, model.vocab_size, B * L).view(B, L) if model.noise == "uniform" else None
    z = model.noised(ids, t, draws.rand(B * L).view(B, L), words)
    with torch.no_grad():
        memory = model.memory(z, t, cond=batch.cond)
    return model.decoder.loss(ids, memory, t)


def contextual_loss(
    model: Denoiser | TokenDenoiser,
    batch: Batch,
    config: Config,
    *,
    generator: torch.Generator | None = None,
    frozen: Frozen = Frozen(),
) -> LossOutput:
    """The network's own objective (the diffusion, masked or uniform one) plus its decoder's
    cross-entropy (`frozen` is unused)."""
    if isinstance(model, TokenDenoiser):
        own = masked_loss if model.noise == "masked" else uniform_loss
        contextual = token_decoder_loss(model, batch, config, generator=generator)
        return own(model, batch, config, generator=generator).plus("contextual", contextual, config.rounding.weight)
    diffusion = e2e_loss(model, batch, config, generator=generator)
    contextual = decoder_loss(model, batch, config, generator=generator)
    return diffusion.plus("contextual", contextual, config.rounding.weight)
