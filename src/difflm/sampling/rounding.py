"""How a sampler reads the denoiser's prediction: the x̂0 it steps with, and the final words.

Two knobs. A sampler called directly leaves both off and follows the model exactly;
every way of sampling through `difflm.pipeline` (the CLI, `difflm.load(RUN).sample()`,
the demo, the benches) sharpens with `SAMPLING_TEMPERATURE` unless told otherwise.

    temperature τ   x̂0 = softmax(logits/τ)·EMB, the predicted word distribution sharpened
                    (τ < 1) before the embeddings are averaged; τ = 0 takes the argmax
                    word's embedding. The logits are the network's own (predict=logits,
                    where τ = 1 is its x̂0) or its rounding head's, x̂0·EMBᵀ (other views).
                    Lowering the temperature of the score-interpolation estimate is Plaid's
                    and CDCD's sampling knob; a blurred average of many words, stepped
                    toward, keeps later steps undecided.
    clamp_from      Diffusion-LM's clamping trick: snap x̂0 to the nearest word embedding
                    at times t ≤ (clamp_from + 1)/T.

How the temperature trades quality, length and diversity is measured in docs/benchmarks.md
("Sampling temperature"). Sharpening is mode-seeking: sentences get shorter and less varied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

#: The temperature of every way of sampling through `difflm.pipeline` (the CLI, the demo,
#: the benches): the best measured lm-score on the grammar corpus.
SAMPLING_TEMPERATURE = 0.1

if TYPE_CHECKING:
    from difflm.diffusion.schedules import NoiseSchedule
    from difflm.model.denoiser import Prediction
    from difflm.model.embedding import WordEmbedding


def clamp_time(schedule: NoiseSchedule, clamp_from: int | None) -> float | None:
    """The time (clamp_from + 1)/T at and below which x̂0 is clamped to an embedding (None: never).

    Raises:
        ValueError: clamp_from is neither None nor an integer.
    """
    if clamp_from is None:
        return None
    if isinstance(clamp_from, bool) or not isinstance(clamp_from, int):
        raise ValueError(f"clamp_from must be an integer index or None, got {clamp_from!r}")
    return float(schedule.time_of(clamp_from))


def check_temperature(temperature: object) -> float:
    """τ as a float; ValueError unless it is a number ≥ 0 (1 = the model's own distribution)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be a number ≥ 0 (1 = the model's own x̂0), got {temperature!r}")
    return float(temperature)


@dataclass(frozen=True)
class Rounding:
    """A sampler's reading of predictions: temperature τ ≥ 0 and the clamping time (None: never)."""

    temperature: float = 1.0
    clamp_at: float | None = None

    @classmethod
    def of(
        cls, schedule: NoiseSchedule, *, temperature: float | None = None, clamp_from: int | None = None
    ) -> Rounding:
        """Validate the sampler options `temperature` (None: 1, the model's own x̂0) and `clamp_from`.

        Raises:
            ValueError: a negative or non-numeric temperature, or a bad clamp_from.
        """
        tau = 1.0 if temperature is None else check_temperature(temperature)
        return cls(temperature=tau, clamp_at=clamp_time(schedule, clamp_from))

    def clamps(self, t: float) -> bool:
        """Whether x̂0 is snapped to an embedding at time t."""
        return self.clamp_at is not None and t <= self.clamp_at

    def x0(self, pred: Prediction, embedding: WordEmbedding, t: float) -> torch.Tensor:
        """The x̂0 a sampler steps with at time t."""
        if self.temperature == 1:
            x0 = pred.x0
        elif self.temperature == 0:
            x0 = embedding(pred.logits.argmax(-1))
        else:
            x0 = (pred.logits / self.temperature).softmax(-1) @ embedding.table()
        return embedding.clamp(x0) if self.clamps(t) else x0

    def tokens(self, pred: Prediction, x0_hat: torch.Tensor, embedding: WordEmbedding, t: float) -> torch.Tensor:
        """The words of the last step: the clamped vectors' words, else the predicted argmax."""
        return embedding.nearest(x0_hat) if self.clamps(t) else pred.logits.argmax(-1)
