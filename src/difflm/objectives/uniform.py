"""The objective of uniform diffusion: UDLM's continuous-time NELBO (`diffusion/uniform.py`).

    L = E_{t ~ U(ε, 1 − ε)} Σ_i (1/(N·α_t))·[N/x̄_θ,i − N/x̄_i − Σ_{j≠i} (x̄_j/x̄_i)·log(…)],   z_t ~ q(z_t | x)

reported per modelled token (nats), with the masked objective's low-discrepancy times,
fixed tokens (START; under length anchors END and the PAD tail, never noised) and
classifier-free condition dropout. The times stop ε short of 1 as well as of 0: at α_t = 0
the weight 1/α_t is infinite and the bracket exactly 0.
"""

from __future__ import annotations

import torch

from difflm.config import Config
from difflm.diffusion.uniform import nelbo_integrand
from difflm.model.tokens import TokenDenoiser
from difflm.objectives.base import T_MIN, Batch, Draws, Frozen, LossOutput, drop_conditions, stratified_times


def uniform_loss(
    model: TokenDenoiser,
    batch: Batch,
    config: Config,
    *,
    generator: torch.Generator | None = None,
    frozen: Frozen = Frozen(),
) -> LossOutput:
    """The NELBO per modelled token of a batch of rows [B, L] and their conditions (`frozen` unused)."""
    ids = batch.ids
    B, L = ids.shape
    draws = Draws(generator, ids.device)
    t = stratified_times(draws, B).clamp_max(1 - T_MIN)
    modelled = model.noisable(ids)
    words = draws.randint(0, model.vocab_size, B * L).view(B, L)
    z = model.noised(ids, t, draws.rand(B * L).view(B, L), words)
    cond = drop_conditions(batch.cond, draws, config.diffusion.cond_drop)
    logits = model(z, t, cond=cond)
    terms = nelbo_integrand(z, ids, logits.softmax(-1), t) * modelled  # [B, L]
    loss = terms.sum() / modelled.sum().clamp_min(1)
    noised = (z != ids).float()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    return LossOutput.of(loss, {"noised_ce": (ce * noised).sum() / noised.sum().clamp_min(1)})
