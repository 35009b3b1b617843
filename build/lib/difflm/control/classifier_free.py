"""Classifier-free guidance (Ho & Salimans 2022) for runs trained with a dropped condition.

Notation:

    c             the condition: a multi-hot over the run's slot=value pairs, [P] or [B, P]
    ∅             the null condition c = 0, which training put in place of c with probability
                  diffusion.cond_drop, so the same network knows both
    f(x_t, t, c)  the denoiser's raw output: word logits (predict=logits), else x̂0
    w             the guidance scale: 0 unconditional, 1 conditional, > 1 past the conditional

    f̃(x_t, t) = f(x_t, t, ∅) + w·(f(x_t, t, c) − f(x_t, t, ∅))

Which output is combined: the network's own, as Ho & Salimans combine the ε their network
predicts. For x0/eps/v models that is x̂0: ε̂ and v̂ are affine in x̂0 at a fixed x_t, with
coefficients that do not depend on c, so combining x̂0, ε̂ or v̂ is one and the same step.
For the default logits model it is the logits: per position the guided word distribution is
p̃_i(w) ∝ p_i(w | x_t, ∅)·[p_i(w | x_t, c) / p_i(w | x_t, ∅)]^w, the unconditional
distribution tilted by the implicit classifier to the power w — CFG's p(x)·p(c | x)^w, word
by word. x̂0 = Σ_w p̃_i(w)·EMB(w) then stays a mixture of word embeddings, where the network
was trained and what rounding reads, whereas extrapolating x̂0 itself for w > 1 leaves the
embeddings' convex hull and leaves the final argmax without a distribution behind it.

The guidance is a wrapper with the denoiser's call signature, so every sampler (and the
gradient guidance's constraints, which read the same guided prediction) gets it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from difflm.control.judges import JUDGES, expressed
from difflm.model.denoiser import Prediction
from difflm.sampling.autoguidance import GuidedDenoiser, extrapolate
from difflm.sampling.wrappers import DenoiserWrapper
from difflm.text.slots import SlotLabels, parse_pair

if TYPE_CHECKING:
    from difflm.model.denoiser import Denoiser


def condition_of(
    conditions: SlotLabels | None, condition: Mapping[str, str] | Iterable[str] | str, device: torch.device
) -> torch.Tensor:
    """The multi-hot c [P] of slot values, e.g. {"food": "Italian"}, ["food=Italian"] or "food=Italian", on `device`.

    `conditions` is the run's label set (None: a run trained without conditioning).

    Raises:
        ValueError: the run was trained without conditioning, no slot value is given, or a
            slot=value pair the run never saw in training (all such pairs named).
    """
    if conditions is None:
        raise ValueError(
            "this run was trained without conditioning: classifier-free guidance needs a run "
            "trained with --set model.condition=slots"
        )
    if isinstance(condition, str):
        condition = [condition]
    slots = dict(condition) if isinstance(condition, Mapping) else dict(parse_pair(item) for item in condition)
    if not slots:
        raise ValueError("classifier-free guidance needs at least one slot=value condition")
    return conditions.encode([slots])[0].to(device)


class Expresses:
    """The success check of a slot value enforced by classifier-free guidance (no classifier needed).

    Args:
        slot: the slot, e.g. "food".
        value: its value, e.g. "Italian".
        judge: "grammar" (the exact parser's slots) or "text" (a substring, the paper's check).

    Raises:
        ValueError: an unknown judge.
    """

    name = "attribute"

    def __init__(self, slot: str, value: str, judge: str) -> None:
        if judge not in JUDGES:
            raise ValueError(f"unknown judge {judge!r}; valid: {', '.join(JUDGES)}")
        self.slot, self.value, self.judge = slot, value, judge

    def score(self, words: Sequence[str]) -> float:
        """1 if the decoded sentence expresses slot = value (`expressed`), else 0."""
        return expressed(words, self.slot, self.value, self.judge)

    def satisfied(self, words: Sequence[str]) -> bool:
        return self.score(words) == 1.0


class ClassifierFreeGuidance(GuidedDenoiser):
    """The denoiser with classifier-free guidance: f̃(x_t, t) for a fixed condition c and scale w.

    Called like the denoiser, `(x_t, t, *, cond=None, self_cond=None) -> Prediction`; every
    other attribute (.schedule, .embedding, ...) is the wrapped denoiser's. w = 0 and w = 1
    make one plain call (with ∅ or c), so they equal unconditional and conditional sampling
    exactly; any other w makes one batched call of 2B rows (c and ∅).

    Args:
        denoiser: a denoiser trained with a condition (model.condition=slots).
        cond: c, a multi-hot [P] (every row) or [B, P], or source ids [S] or [B, S].
        scale: w ≥ 0.

    Raises:
        ValueError: a denoiser without conditioning, a negative or non-finite w, or a
            condition of the wrong size.
    """

    def __init__(self, denoiser: Denoiser | DenoiserWrapper, cond: torch.Tensor, scale: float) -> None:
        num_conditions = getattr(denoiser, "num_conditions", 0)
        if not num_conditions:
            raise ValueError(
                "this model was trained without conditioning: classifier-free guidance needs a run "
                "trained with --set model.condition=slots"
            )
        super().__init__(denoiser, scale)
        if cond.shape[-1] != num_conditions or cond.dim() not in (1, 2):
            raise ValueError(
                f"the condition must be a multi-hot [P] or [B, P] with P = {num_conditions}, "
                f"got shape {list(cond.shape)}"
            )
        self.cond = cond

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, *, cond: Any = None, self_cond: torch.Tensor | None = None
    ) -> Prediction:
        if cond is not None:
            raise ValueError("classifier-free guidance carries its own condition: do not pass cond to the sampler")
        B = x_t.shape[0]
        c = self.cond.to(x_t.device)
        if c.dim() == 2 and B % c.shape[0]:
            raise ValueError(f"the condition has {c.shape[0]} rows but the batch has {B}")
        # One condition per row: a call on k·B rows (another guidance's batched branches) repeats them.
        c = c.expand(B, -1) if c.dim() == 1 else c.repeat(B // c.shape[0], 1)
        w = self.scale
        if w in (0.0, 1.0):  # one call: exactly the unconditional (∅) or the conditional (c) model
            return self.denoiser(x_t, t, cond=c if w == 1.0 else None, self_cond=self_cond)
        both = self.denoiser(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            cond=torch.cat([c, torch.zeros_like(c)]),
            self_cond=None if self_cond is None else torch.cat([self_cond, self_cond]),
        )
        conditional, unconditional = both.halves()
        return extrapolate(self.denoiser, conditional, unconditional, w)
