"""What every training objective shares: its signature, its inputs and its output.

An objective is a free function with one signature:

    loss(model, batch, config, *, generator=None, frozen=Frozen()) -> LossOutput

`model` is the network being trained, `batch` the rows of one step, `config` the run's
`Config`, `generator` the source of every random draw (so that a step is reproducible),
and `frozen` the networks the loss reads but never trains. A loss is written as its body,
body(model, batch, config, draws, frozen), which draws from the generator through `Draws`,
and `@objective` gives it the signature. A new model family is one such function and one
entry in `difflm.objectives.OBJECTIVES`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch
import torch.nn.functional as F

from difflm.config import Config

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


@dataclass(frozen=True)
class Batch:
    """The rows of one training step.

    Attributes:
        ids: word ids [B, L] (START w… END PAD…).
        cond: the rows' conditions [B, P] (multi-hot slot=value pairs) for a conditioned
            model, else None.
    """

    ids: torch.Tensor
    cond: torch.Tensor | None = None

    def __getitem__(self, rows: slice | torch.Tensor) -> Batch:
        return Batch(self.ids[rows], None if self.cond is None else self.cond[rows])


@dataclass(frozen=True)
class Frozen:
    """Networks an objective reads but never trains. A plain container, not a Module, so that
    DDP neither syncs nor checkpoints them with the model.

    Attributes:
        target: EMA weights θ⁻ for targets that use them (the shortcut model's bootstrap).
        teacher: the frozen diffusion model of consistency distillation.
        teacher_words: S(x_T), the words a teacher's sampler writes from noise x_T
            [B, L, d] (sampler distillation; built by the trainer from `sampling`).
    """

    target: Denoiser | None = None
    teacher: Denoiser | None = None
    teacher_words: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class LossOutput:
    """The total loss and each term of it (detached floats for logging)."""

    loss: torch.Tensor
    terms: dict[str, float]

    @classmethod
    def of(cls, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> LossOutput:
        return cls(loss=loss, terms={"loss": loss.item(), **{k: v.item() for k, v in terms.items()}})

    def plus(self, name: str, term: torch.Tensor, weight: float = 1.0, *, scale: float = 1.0) -> LossOutput:
        """scale·(this loss) + weight·term, with `term` logged as `name` before this loss's own terms."""
        loss = scale * self.loss + weight * term
        own = {key: value for key, value in self.terms.items() if key != "loss"}
        return LossOutput(loss=loss, terms={"loss": loss.item(), name: term.item(), **own})


class Draws:
    """A loss's randomness: drawn on the generator's device (reproducible), then moved to the model's."""

    def __init__(self, generator: torch.Generator | None, device: torch.device) -> None:
        self.generator, self.device = generator, device
        self.drawn_on = generator.device if generator is not None else device

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.drawn_on).to(self.device)

    def rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=self.drawn_on).to(self.device)

    def randint(self, low: int, high: int, n: int) -> torch.Tensor:
        return torch.randint(low, high, (n,), generator=self.generator, device=self.drawn_on).to(self.device)


Net = TypeVar("Net", contravariant=True)


class Objective(Protocol[Net]):
    """A loss of the common signature (module docstring)."""

    # Positional-only: each loss names its network after its kind (denoiser, model).
    def __call__(
        self,
        model: Net,
        batch: Batch,
        config: Config,
        /,
        *,
        generator: torch.Generator | None = None,
        frozen: Frozen = ...,
    ) -> LossOutput: ...


def objective(body: Callable[[Net, Batch, Config, Draws, Frozen], LossOutput]) -> Objective[Net]:
    """The loss of the common signature that runs `body` with the generator's draws on the batch's device."""

    @functools.wraps(body)
    def loss(
        model: Net,
        batch: Batch,
        config: Config,
        /,
        *,
        generator: torch.Generator | None = None,
        frozen: Frozen = Frozen(),
    ) -> LossOutput:
        return body(model, batch, config, Draws(generator, batch.ids.device), frozen)

    del loss.__wrapped__  # help() and inspect.signature show how a loss is called, not its body
    return loss


def drop_conditions(cond: torch.Tensor | None, draws: Draws, share: float) -> torch.Tensor | None:
    """Each row's condition [B, P], replaced by the null condition with probability `share`."""
    if cond is None:
        return None
    return cond * (draws.rand(len(cond)) >= share)[:, None].to(cond.dtype)


def word_nll(logits: torch.Tensor, ids: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
    """Mean −log p(w) of word logits [B, L, V] at the words ids [B, L], over the positions
    `counted` [B, L] (None: all)."""
    if counted is None:
        return F.cross_entropy(logits.transpose(1, 2), ids)
    nll = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    return (nll * counted).sum() / counted.sum().clamp_min(1)
