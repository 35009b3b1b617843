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

from difflm.config import Config, RoundingConfig
from difflm.diffusion import process
from difflm.model.anchors import anchor, anchors_of
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, objective
from difflm.objectives.diffusion import e2e_loss
from difflm.objectives.masked import masked_loss, noised_rows
from difflm.objectives.uniform import uniform_loss


def decoder_loss(model: Denoiser | TokenDenoiser, batch: Batch, config: Config, draws: Draws) -> torch.Tensor:
    """−log p(w | memory at the row noised to t_d) per counted position, the memory read without
    gradient: x_{t_d} for the denoiser, z_{t_d} for a masked or uniform network."""
    if model.decoder is None:
        hint = "rounding.discrete=true" if isinstance(model, TokenDenoiser) else "rounding.kind=contextual"
        raise ValueError(f"this network has no contextual rounding decoder ({hint})")
    if isinstance(model, TokenDenoiser):
        t = _t_d(config.rounding, draws, len(batch.ids))
        noised = noised_rows(model, batch.ids, t, draws)
    else:
        noised, t = _latents_at_t_d(model, batch.ids, config.rounding, draws)
    with torch.no_grad():
        memory = model.memory(noised, t, cond=batch.cond)
    return model.decoder.loss(batch.ids, memory, t)


def _t_d(rc: RoundingConfig, draws: Draws, rows: int) -> torch.Tensor:
    """t_d ~ U[t_min, t_max] for each of `rows` rows."""
    return rc.t_min + (rc.t_max - rc.t_min) * draws.rand(rows)


def _latents_at_t_d(
    denoiser: Denoiser, ids: torch.Tensor, rc: RoundingConfig, draws: Draws
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_{t_d} of the rows' embeddings, held clean at their length anchors, and t_d."""
    abar0 = denoiser.schedule.alpha_bar(torch.zeros(1, dtype=torch.float64)).item()
    emb = denoiser.embedding(ids)
    x0 = emb + (1 - abar0) ** 0.5 * draws.randn(tuple(emb.shape))
    t = _t_d(rc, draws, ids.shape[0])
    abar = denoiser.schedule.alpha_bar(t.double()).to(x0)[:, None, None]
    x_t = process.q_sample(x0, abar, draws.randn(tuple(emb.shape)))
    if denoiser.lengths is not None:
        x_t = anchor(x_t, anchors_of(ids), denoiser.embedding)
    return x_t, t


@objective
def contextual_loss(
    model: Denoiser | TokenDenoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen
) -> LossOutput:
    """The network's own objective (the diffusion, masked or uniform one) plus its decoder's
    cross-entropy (`frozen` is unused)."""
    if isinstance(model, TokenDenoiser):  # the decoder's draws first, as these runs were trained
        own_loss = masked_loss if model.noise == "masked" else uniform_loss
        contextual = decoder_loss(model, batch, config, draws)
        own = own_loss(model, batch, config, generator=draws.generator)
    else:
        own = e2e_loss(model, batch, config, generator=draws.generator)
        contextual = decoder_loss(model, batch, config, draws)
    return own.plus("contextual", contextual, config.rounding.weight)
