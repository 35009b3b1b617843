"""Training objectives: one signature (`base.py`), one registry.

A run's objective is picked by its config: `model.kind=autoregressive` trains the causal LM,
`model.kind=masked` and `uniform` the token denoiser (MDLM's and UDLM's NELBO),
`rounding.kind=contextual` the denoiser (or, with `rounding.discrete`, the token network)
with its rounding decoder, otherwise
`model.generator` names the diffusion objective (`diffusion`, Diffusion-LM's end-to-end
loss) or a one/few-step generator's.
"""

from __future__ import annotations

from typing import Any

from difflm.config import Config
from difflm.objectives.autoregressive import autoregressive_loss
from difflm.objectives.base import Batch, Draws, Frozen, LossOutput, Objective, word_nll
from difflm.objectives.consistency import consistency_loss
from difflm.objectives.contextual import contextual_loss
from difflm.objectives.diffusion import e2e_loss
from difflm.objectives.distillation import distillation_loss
from difflm.objectives.masked import masked_loss
from difflm.objectives.meanflow import meanflow_loss
from difflm.objectives.shortcut import shortcut_loss
from difflm.objectives.uniform import uniform_loss

__all__ = [
    "OBJECTIVES",
    "Batch",
    "Draws",
    "Frozen",
    "LossOutput",
    "Objective",
    "get_objective",
    "objective_name",
    "word_nll",
]


OBJECTIVES: dict[str, Objective[Any]] = {
    "diffusion": e2e_loss,
    "diffusion+contextual": contextual_loss,
    "shortcut": shortcut_loss,
    "meanflow": meanflow_loss,
    "consistency": consistency_loss,
    "distilled": distillation_loss,
    "autoregressive": autoregressive_loss,
    "masked": masked_loss,
    "uniform": uniform_loss,
    "masked+contextual": contextual_loss,
    "uniform+contextual": contextual_loss,
}


def objective_name(config: Config) -> str:
    """The registry key of a run's objective."""
    if config.contextual_rounding:  # the network with its rounding decoder
        return f"{config.model.kind}+contextual"
    if config.model.kind != "diffusion":
        return config.model.kind
    return config.model.generator


def get_objective(config: Config) -> Objective[Any]:
    """The loss function a config trains with."""
    name = objective_name(config)
    if name not in OBJECTIVES:
        raise ValueError(f"no objective {name!r}; valid: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]
