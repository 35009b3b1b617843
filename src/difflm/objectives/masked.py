"""The objective of masked diffusion: MDLM's continuous-time NELBO (`diffusion/masking.py`).

    L = E_{t ~ U(ε, 1)} (1/t)·Σ_{i: z_t,i = m} −log p_θ(x_i | z_t),   z_t ~ q(z_t | x)

reported per modelled token (nats). The B rows of a batch take the times (u + b)/B mod 1 for
one uniform u (MDLM's low-discrepancy sampler): the same expectation with far less
variance, since the weight 1/t makes small times rare but heavy. START is never masked,
nor, under length anchors, END and the PAD tail. A conditioned model sees each row's slot
values, replaced by the null condition with probability diffusion.cond_drop (classifier-free
guidance), as the continuous objective does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from difflm.config import Config
from difflm.model.tokens import TokenDenoiser
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, drop_conditions, objective

#: The smallest training time ε of discrete diffusion (MDLM's sampling_eps): weights 1/t stay finite.
T_MIN = 1e-3


def stratified_times(draws: Draws, B: int) -> torch.Tensor:
    """B times (u + b)/B mod 1 [B] for one uniform u, at least `T_MIN`."""
    return ((draws.rand(1) + torch.arange(B, device=draws.device) / B) % 1).clamp_min(T_MIN)


def noised_rows(model: TokenDenoiser, ids: torch.Tensor, t: torch.Tensor, draws: Draws) -> torch.Tensor:
    """z_t ~ q(z_t | x) of rows ids [B, L] at times t [B] by the network's own forward process
    (masking or substitution): the uniform process's token ids first, then the uniforms."""
    B, L = ids.shape
    words = draws.randint(0, model.vocab_size, B * L).view(B, L) if model.noise == "uniform" else None
    return model.noised(ids, t, draws.rand(B * L).view(B, L), words)


@objective
def masked_loss(model: TokenDenoiser, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """The NELBO per modelled token of a batch of rows [B, L] and their conditions (`frozen` unused)."""
    ids, cond = batch.ids, batch.cond
    t = stratified_times(draws, len(ids))
    modelled = model.noisable(ids)
    z = noised_rows(model, ids, t, draws)
    masked = (z == model.mask_id).float()
    cond = drop_conditions(cond, draws, config.diffusion.cond_drop)
    nll = F.cross_entropy(model(z, cond=cond).transpose(1, 2), ids, reduction="none")  # [B, L]
    loss = ((nll * masked).sum(1) / t).sum() / modelled.sum().clamp_min(1)
    terms = {"masked_ce": (nll * masked).sum() / masked.sum().clamp_min(1)}
    return LossOutput.of(loss, terms)
