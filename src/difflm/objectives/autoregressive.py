"""The autoregressive baseline's objective: next-token cross-entropy (the teacher LM, the AR rows)."""

from __future__ import annotations

from difflm.config import Config
from difflm.model.autoregressive import CausalLM
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, drop_conditions, objective


@objective
def autoregressive_loss(model: CausalLM, batch: Batch, config: Config, draws: Draws, frozen: Frozen) -> LossOutput:
    """Mean −log p(w_i | w_<i, c) over the counted positions of `batch.ids` [B, L]; a
    conditioned LM sees each row's slot values, replaced by the null condition with
    probability diffusion.cond_drop (so it also models text without them). `frozen` is unused.
    """
    cond = drop_conditions(batch.cond, draws, config.diffusion.cond_drop)
    return LossOutput.of(model.loss(batch.ids, cond), {})
