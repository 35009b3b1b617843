"""Constraints backed by classifiers on noisy latents: POS, Tree, Span and Attribute (Diffusion-LM §5).

Each constraint holds a target c and a trained classifier p(c | x_t) of the run, and gives
the guidance code

    log_prob(x [B, L, d], t, denoiser) -> log p(c | x_t), [B]      differentiable in x
    weight                                                         w_c, its weight in the sum of log-probs

Positions follow the run's rows: position 0 is START, word k sits at position k+1. Spans are
word spans (i, j) as in `Tree.spans()`: the words i..j−1, 0-based, end exclusive. The
classifier reads x_t itself (it was trained on noisy latents), so `denoiser` is not used.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from difflm.control.classifiers import (
    AttributeClassifier,
    LatentClassifier,
    PosClassifier,
    TreeClassifier,
    load_classifier,
)
from difflm.text.grammar.tree import Tree as ParseTree

RunOrClassifier = str | Path | LatentClassifier


class ClassifierConstraint:
    """A target scored by one of the run's classifiers.

    Args:
        run: a run directory (its RUN/classifiers/<task>/ is loaded) or an already loaded
            classifier, so that several constraints can share one.
        weight: w_c ≥ 0, the constraint's weight in the guidance objective.
    """

    task: str = ""

    def __init__(self, run: RunOrClassifier, *, weight: float = 1.0) -> None:
        classifier = run if isinstance(run, LatentClassifier) else load_classifier(run, self.task)
        if classifier.config.task != self.task:
            raise ValueError(f"{type(self).__name__} needs a {self.task} classifier, got a {classifier.config.task} one")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight < math.inf:
            raise ValueError(f"constraint weight must be a number ≥ 0, got {weight!r}")
        self.classifier = classifier.eval().requires_grad_(False)  # gradients flow to x only
        self.weight = float(weight)
        self.max_len = classifier.config.max_len
        self._targets: dict[tuple[int, torch.device], torch.Tensor] = {}

    def log_prob(self, x: torch.Tensor, t: float | torch.Tensor, denoiser: object = None) -> torch.Tensor:
        """log p(c | x_t) for x [B, L, d] at time t of x: [B], in x's dtype."""
        classifier = self._on(x.device)
        dtype = next(classifier.parameters()).dtype
        return self._score(classifier, x.to(dtype), t).to(x.dtype)

    def _on(self, device: torch.device) -> LatentClassifier:
        """The classifier on x's device (moved once)."""
        if next(self.classifier.parameters()).device != device:
            self.classifier.to(device)
        return self.classifier

    def _target(self, length: int, device: torch.device) -> torch.Tensor:
        """The target tensor for rows of `length` positions, built once per length and device."""
        key = (length, device)
        if key not in self._targets:
            self._targets[key] = self._build(length).to(device)
        return self._targets[key]

    def _build(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, classifier: LatentClassifier, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        target = self._target(x.shape[1], x.device)
        return classifier.log_prob(x, t, target.expand(x.shape[0], *target.shape[1:]))


class POS(ClassifierConstraint):
    """A part-of-speech sequence: one UPOS tag per word, and exactly that many words.

    Args:
        tags: the tags, as a sequence or a space-separated string ("PROPN AUX DET NOUN PUNCT").
        run: see `ClassifierConstraint`.
        weight: w_c.

    Raises:
        ValueError: an unknown tag (named, with the tag set) or more tags than L − 2.
    """

    task = "pos"

    def __init__(self, tags: Sequence[str] | str, *, run: RunOrClassifier, weight: float = 1.0) -> None:
        super().__init__(run, weight=weight)
        self.tags = tuple(tags.split() if isinstance(tags, str) else tags)
        if not self.tags:
            raise ValueError("a POS constraint needs at least one tag")
        self._build(self.max_len)  # validate now, not at the first sampler step

    def _build(self, length: int) -> torch.Tensor:
        classifier: PosClassifier = self.classifier  # type: ignore[assignment]
        return classifier.target([self.tags], length)


class Tree(ClassifierConstraint):
    """A whole constituency tree: every chart cell inside the sentence gets its label or "no span".

    Args:
        bracketed: the tree, e.g. "(ROOT (S (NP (PROPN Zizzi)) (VP (AUX is) (ADJP (ADJ cheap))) (PUNCT .)))";
            its preterminals only fix the number of words.
        run: see `ClassifierConstraint`.
        weight: w_c.

    Raises:
        ValueError: a malformed or unbalanced tree string, more words than L − 2, or a label
            (chain) the classifier does not know.
    """

    task = "tree"

    def __init__(self, bracketed: str, *, run: RunOrClassifier, weight: float = 1.0) -> None:
        super().__init__(run, weight=weight)
        self.tree = ParseTree.from_string(bracketed)
        self._build(self.max_len)

    def _build(self, length: int) -> torch.Tensor:
        classifier: TreeClassifier = self.classifier  # type: ignore[assignment]
        return classifier.target([self.tree], length)


class Span(ClassifierConstraint):
    """One labelled constituent: the words i..j−1 form a `label` phrase.

    Args:
        i: first word (0-based).
        j: one past the last word.
        label: a constituent label such as "NP"; a unary chain containing it counts.
        run: see `ClassifierConstraint`.
        weight: w_c.

    Raises:
        ValueError: the span is empty or past L − 2 words, or the label is unknown.
    """

    task = "tree"

    def __init__(self, i: int, j: int, label: str, *, run: RunOrClassifier, weight: float = 1.0) -> None:
        super().__init__(run, weight=weight)
        classifier: TreeClassifier = self.classifier  # type: ignore[assignment]
        self.i, self.j, self.label = i, j, label
        self._check_range(self.max_len)
        if label not in classifier.span_labels():
            raise ValueError(f"unknown constituent label {label!r}; valid labels: {', '.join(classifier.span_labels())}")

    def _check_range(self, length: int) -> None:
        i, j = self.i, self.j
        if not (isinstance(i, int) and isinstance(j, int) and 0 <= i < j <= length - 2):
            raise ValueError(
                f"span ({i}, {j}) is out of range: need 0 ≤ i < j ≤ {length - 2} (words i..j−1 of at most {length - 2})"
            )

    def _score(self, classifier: LatentClassifier, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        self._check_range(x.shape[1])
        return classifier.span_log_prob(x, t, self.i, self.j, self.label)  # type: ignore[attr-defined]


class Attribute(ClassifierConstraint):
    """A slot value the sentence must express, e.g. Attribute("food", "Italian").

    Args:
        slot: a slot name of the run's corpus.
        value: one of that slot's values.
        run: see `ClassifierConstraint`.
        weight: w_c.

    Raises:
        ValueError: an unknown slot (valid slots listed) or value (the slot's values listed).
    """

    task = "attribute"

    def __init__(self, slot: str, value: str, *, run: RunOrClassifier, weight: float = 1.0) -> None:
        super().__init__(run, weight=weight)
        values = self.classifier.values()  # type: ignore[attr-defined]
        if slot not in values:
            raise ValueError(f"unknown slot {slot!r}; valid slots: {', '.join(values)}")
        if value not in values[slot]:
            raise ValueError(f"unknown value {value!r} for slot {slot!r}; valid values: {', '.join(values[slot])}")
        self.slot, self.value = slot, value

    def _build(self, length: int) -> torch.Tensor:
        classifier: AttributeClassifier = self.classifier  # type: ignore[assignment]
        return classifier.target([{self.slot: self.value}])
