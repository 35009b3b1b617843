"""Classifier guidance of discrete diffusion runs (masked and uniform), in its first-order form
(Nisonoff et al. 2024, arXiv 2406.01572).

A classifier of the run's noised token rows (`train_classifier`, `ClassifierConfig.tokens`)
scores log p(c | z_t) of a row z [B, L] read as one-hot vectors. What guidance needs is, for
every position i and word w, how much writing w at i would change it:

    log p(c | z with z_i = w) − log p(c | z)  ≈  g[i, w] − g[i, z_i],   g = ∇_onehot(z) Σ_c w_c·log p(c | z_t)

one backward pass for all L·V substitutions (the first-order estimate, where exact
reweighting would take one classifier call per candidate). The tilt is added to the
denoiser's word log-probabilities, so each sampler draws from p(x_i | z)·exp(tilt)
renormalised: under masking, the word revealed at a masked position; under uniform noise,
the prediction x_θ plugged into the posterior.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from difflm.control.classifier_constraints import ClassifierConstraint
from difflm.sampling.tokens import TokenNetwork
from difflm.text.vocab import Vocab


def check_token_classifiers(
    constraints: Sequence[ClassifierConstraint], tokens: int, kind: str, prefixes: bool = False
) -> None:
    """ValueError unless every constraint's classifier reads this run's `tokens` token ids, as
    noised rows of a discrete run or (`prefixes`, an autoregressive run's FUDGE) as prefixes."""
    for constraint in constraints:
        config = constraint.classifier.config
        if config.tokens != tokens or config.prefixes != prefixes:
            if config.tokens == 0:
                what = "a continuous run's noisy latents"
            elif config.prefixes != prefixes:
                what = "prefixes of an autoregressive run" if config.prefixes else "a discrete run's noised rows"
            else:
                what = f"{config.tokens} token ids, this run has {tokens}"
            raise ValueError(
                f"{type(constraint).__name__}'s classifier reads {what}: train one on this {kind} run "
                f"(difflm train-classifier RUN --task {constraint.task})"
            )


class GuidedTokenNetwork:
    """`network` (z [B, L], t -> word log-probabilities [B, L, V]) tilted towards the classifier
    constraints (module docstring). Evaluates the denoiser as `network` does, plus one
    classifier call and its gradient per constraint. A call on B of a sample's `rows` rows (one
    length group) counts B/rows of a batched classifier evaluation in each constraint's
    `calls`, as the pipeline counts the denoiser's."""

    def __init__(
        self, network: TokenNetwork, constraints: Sequence[ClassifierConstraint], tokens: int, rows: int
    ) -> None:
        self.network, self.constraints, self.tokens, self.rows = network, list(constraints), tokens, rows
        self.rows_per_call = network.rows_per_call

    def tilt(self, z: torch.Tensor, t: float) -> torch.Tensor:
        """g[i, w] − g[i, z_i] for every word w: [B, L, V]. Rows cut to a length group's width
        are read padded back to the classifier's width with PAD, as its training rows were."""
        width = z.shape[1]
        full = max(c.max_len for c in self.constraints)
        z_full = torch.nn.functional.pad(z, (0, full - width), value=Vocab.PAD_ID) if width < full else z
        with torch.enable_grad():
            onehot = torch.nn.functional.one_hot(z_full, self.tokens).float().requires_grad_()
            share = len(z) / self.rows
            total = torch.stack(
                [c.weight * c.log_prob(onehot, t, evaluations=share).sum() for c in self.constraints]
            ).sum()
            (grad,) = torch.autograd.grad(total, onehot)
        grad = grad[:, :width]
        return grad[..., : self.tokens - 1] - grad.gather(-1, z[..., None])

    def __call__(self, z: torch.Tensor, t: float) -> torch.Tensor:
        return self.network(z, t) + self.tilt(z, t)
