"""The autoregressive baseline's objective: next-token cross-entropy (the teacher LM, the AR rows)."""

from __future__ import annotations

import torch

from difflm.config import Config
from difflm.model.autoregressive import CausalLM
from difflm.objectives.base import Batch, Frozen, LossOutput


def autoregressive_loss(
    model: CausalLM,
    batch: Batch,
    config: Config,
    *,
    generator: torch.Generator | None = None,
    frozen: Frozen = Frozen(),
) -> LossOutput:
    """Mean −log p(w_i | w_<i) over the counted positions of `batch.ids` [B, L].

    `config`, `generator` (the model's only randomness is dropout) and `frozen` are unused.
    """
    return LossOutput.of(model.loss(batch.ids), {})
