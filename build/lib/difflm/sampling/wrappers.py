"""A denoiser seen through a wrapper: one base for every wrapper, and the evaluation count.

Every guidance (self-conditioning guidance, classifier-free guidance, the shared prediction
that gradient guidance's constraints read) is a `DenoiserWrapper`: called like the
denoiser, `(x_t, t, *, cond=None, self_cond=None, ...) -> Prediction`, with every other attribute
(.schedule, .embedding, .config, ...) the wrapped denoiser's. Wrappers nest.

`CountedDenoiser` sits innermost, next to the network, and counts the rows it evaluates:
however the wrappers above it batch their calls (CFG's 2B rows, guidance's extra calls, a
shared prediction that makes none), rows / B is the number of network evaluations per
sample, the one count `pipeline.generate` reports as `nfe`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from difflm.config import ModelConfig
    from difflm.diffusion.schedules import NoiseSchedule
    from difflm.model.denoiser import Denoiser, Prediction
    from difflm.model.embedding import WordEmbedding


class DenoiserLike(Protocol):
    """What readers of a denoiser's prediction ask of it: a `Denoiser` or any wrapper of one."""

    @property
    def config(self) -> ModelConfig: ...

    @property
    def schedule(self) -> NoiseSchedule: ...

    @property
    def embedding(self) -> WordEmbedding: ...

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, *, cond: Any = None, self_cond: torch.Tensor | None = None
    ) -> Prediction: ...

    def from_logits(self, logits: torch.Tensor) -> Prediction: ...


class DenoiserWrapper:
    """What every wrapper shares: the wrapped denoiser, and delegation of its attributes.

    The base call passes cond and self_cond on, the inputs every wrapper takes (`DenoiserLike`);
    `CountedDenoiser`, next to the network, passes every input (a jump too).

    Args:
        denoiser: a denoiser or another wrapper.
    """

    def __init__(self, denoiser: Denoiser | DenoiserWrapper) -> None:
        self.denoiser = denoiser

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, *, cond: Any = None, self_cond: torch.Tensor | None = None
    ) -> Prediction:
        return self.denoiser(x_t, t, cond=cond, self_cond=self_cond)

    def __getattr__(self, name: str) -> Any:  # .schedule, .embedding, .config, ...
        if name == "denoiser":  # not set yet (copy/unpickle): do not recurse
            raise AttributeError(name)
        return getattr(self.denoiser, name)


class CountedDenoiser(DenoiserWrapper):
    """The network, counting the rows it evaluates.

    Attributes:
        rows: rows evaluated so far (a call on [B, L, d] adds B).
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__(denoiser)
        self.rows = 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **inputs: Any) -> Prediction:
        self.rows += x_t.shape[0]
        return self.denoiser(x_t, t, **inputs)

    def per_sample(self, n: int) -> int:
        """Network evaluations per sample of a batch of n samples."""
        return self.rows // n
