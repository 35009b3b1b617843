"""Constraints backed by classifiers on noisy latents: POS, Tree, Span and Attribute (Diffusion-LM §5),
and Mentions (keywords by a words classifier, for FUDGE).

Each constraint holds a target c and a trained classifier p(c | x_t) of the run, and gives
the guidance code

    log_prob(x [B, L, d], t, denoiser) -> log p(c | x_t), [B]      differentiable in x
    weight                                                         w_c, its weight in the sum of log-probs

Positions follow the run's rows: position 0 is START, word k sits at position k+1. Spans are
word spans (i, j) as in `Tree.spans()`: the words i..j−1, 0-based, end exclusive. The
classifier reads x_t itself (it was trained on noisy latents), so `denoiser` is not used.

Success is judged on the generated words as in Diffusion-LM's evaluation (see
`difflm.eval.control_metrics`): `score(words)` is the paper's metric and `satisfied(words)`
an exact match. A run on the bundled grammar is judged by its exact parser ("grammar");
real text ("text") by spaCy's tags (POS) or a substring check (Attribute). Trees and spans
of real text would need a constituency parser, which is not available offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from difflm.control.classifiers import (
    AttributeClassifier,
    LatentClassifier,
    PosClassifier,
    TreeClassifier,
    WordsClassifier,
    load_classifier,
)
from difflm.control.constraints import keyword_list, words_then_end
from difflm.control.guidance import check_weight
from difflm.control.judges import JUDGES, expressed, grammar_parse, judge_of
from difflm.eval.control_metrics import bracket_f1, pos_accuracy, same_tree, span_match
from difflm.text.grammar.tree import Tree as ParseTree
from difflm.text.slots import parse_pair
from difflm.text.tagging import SPACY_MODEL, spacy_pos_tags

if TYPE_CHECKING:
    from difflm.control.specs import SpecContext

RunOrClassifier = str | Path | LatentClassifier

#: What `Pipeline.generate` samples with under a classifier's guidance unless told otherwise
#: (docs/benchmarks.md, "Control under the default recipe" and "Controllable generation"). The
#: model's own x̂0 (τ = 1): a sharpened x̂0 pulls each step back to the model's favourite words
#: and undoes the classifier's push. K = 6 gradient steps per sampler step instead of the
#: paper's 3: more of the classifier's push, at twice its evaluations. Constraints that fix
#: words keep 3 and the sampling temperature: they are exact already, and K also sets how
#: often they evaluate the denoiser.
CLASSIFIER_TEMPERATURE = 1.0
CLASSIFIER_GUIDANCE_STEPS = 6


class ClassifierConstraint:
    """A target scored by one of the run's classifiers.

    Args:
        run: a run directory (its RUN/classifiers/<task>/ is loaded) or an already loaded
            classifier, so that several constraints can share one.
        weight: w_c ≥ 0, the constraint's weight in the guidance objective.
        judge: how `score` and `satisfied` read the output, "grammar" or "text" (see the
            module docstring); None takes the run's (`judge_of`) and, with a loaded
            classifier, leaves the checks unavailable.

    Attributes:
        calls: classifier evaluations so far (each a batched call: one per sample), the
            compute a benchmark reports beside the denoiser's.

    Raises:
        ValueError: a classifier of another task, a bad weight or an unknown judge.
    """

    task: str = ""
    name: str = ""
    classifier: LatentClassifier  # a subclass names its task's class (the task is checked in __init__)

    def __init__(self, run: RunOrClassifier, *, weight: float = 1.0, judge: str | None = None) -> None:
        classifier = run if isinstance(run, LatentClassifier) else load_classifier(run, self.task)
        if classifier.config.task != self.task:
            raise ValueError(
                f"{type(self).__name__} needs a {self.task} classifier, got a {classifier.config.task} one"
            )
        if judge is not None and judge not in JUDGES:
            raise ValueError(f"unknown judge {judge!r}; valid: {', '.join(JUDGES)}")
        self.classifier = classifier.eval().requires_grad_(False)  # gradients flow to x only
        self.weight = check_weight(weight)
        self.judge = judge if judge is not None or isinstance(run, LatentClassifier) else judge_of(run)
        self.max_len = classifier.config.max_len
        self._targets: dict[tuple[int, torch.device], torch.Tensor] = {}
        self.calls: float = 0

    def log_prob(
        self, x: torch.Tensor, t: float | torch.Tensor, denoiser: object = None, evaluations: float = 1.0
    ) -> torch.Tensor:
        """log p(c | x_t) for x [B, L, d] at time t of x (or token ids [B, L] for a classifier of
        token rows): [B], in x's dtype. The call adds
        `evaluations` to `calls`: a call on part of a sample's rows counts that share, one
        that scores k candidate rows per sample counts k."""
        self._move_to(x.device)
        self.calls += evaluations
        if not x.is_floating_point():  # token ids (a prefix classifier's rows): the result in float32
            return self._log_prob(x, t)
        dtype = next(self.classifier.parameters()).dtype
        return self._log_prob(x.to(dtype), t).to(x.dtype)

    def score(self, words: Sequence[str]) -> float:
        """The paper's success metric of the decoded sentence (START/END/PAD removed), in [0, 1]."""
        raise NotImplementedError

    def satisfied(self, words: Sequence[str]) -> bool:
        """Exact success: for Span and Attribute a score of 1 (POS and Tree compare whole sequences)."""
        return self.score(words) == 1.0

    def _judged(self) -> str:
        if self.judge is None:
            raise ValueError(
                f"{type(self).__name__} was built from a loaded classifier: "
                "pass judge='grammar' or 'text' to check outputs"
            )
        return self.judge

    def _parse_tree(self, words: Sequence[str]) -> ParseTree | None:
        """The exact parser's tree of the words, None if ungrammatical (tree and span checks)."""
        if self._judged() != "grammar":
            raise ValueError(
                f"checking a {self.name} constraint on real text needs a constituency parser (benepar), "
                "which is not available offline; tree and span checks work on the bundled grammar corpus"
            )
        result = grammar_parse(tuple(words))
        if not result.grammatical:
            return None
        assert result.tree is not None  # a grammatical parse has its Viterbi tree
        return ParseTree.from_string(result.tree)

    def _move_to(self, device: torch.device) -> None:
        """Put the classifier on x's device (moved once)."""
        if next(self.classifier.parameters()).device != device:
            self.classifier.to(device)

    def _target(self, length: int, device: torch.device) -> torch.Tensor:
        """The target tensor for rows of `length` positions, built once per length and device."""
        key = (length, device)
        if key not in self._targets:
            self._targets[key] = self._build(length).to(device)
        return self._targets[key]

    def _build(self, length: int) -> torch.Tensor:
        raise NotImplementedError

    def _log_prob(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        target = self._target(x.shape[1], x.device)
        return self.classifier.log_prob(x, t, target.expand(x.shape[0], *target.shape[1:]))


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
    name = "pos"
    classifier: PosClassifier

    def __init__(
        self, tags: Sequence[str] | str, *, run: RunOrClassifier, weight: float = 1.0, judge: str | None = None
    ) -> None:
        super().__init__(run, weight=weight, judge=judge)
        self.tags = tuple(tags.split() if isinstance(tags, str) else tags)
        if not self.tags:
            raise ValueError("a POS constraint needs at least one tag")
        self._build(self.max_len)  # validate now, not at the first sampler step

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> POS:
        """From the CLI: `--pos "PROPN AUX DET ADJ NOUN PUNCT"`."""
        return cls(spec, run=context.classifier(cls.task), weight=weight, judge=context.judge())

    def output_tags(self, words: Sequence[str]) -> tuple[str, ...] | None:
        """The output's tags: the parser's Viterbi tags (None if ungrammatical), or spaCy's on real text."""
        if self._judged() == "grammar":
            return grammar_parse(tuple(words)).pos
        return spacy_pos_tags([words], SPACY_MODEL)[0]

    def score(self, words: Sequence[str]) -> float:
        """Word-level tag accuracy against the target (`pos_accuracy`)."""
        return pos_accuracy(self.output_tags(words), self.tags)

    def satisfied(self, words: Sequence[str]) -> bool:
        """Every tag right and exactly as many words as tags."""
        return self.output_tags(words) == self.tags

    def fixed_length(self) -> int:
        return len(self.tags)

    def allowed_words(self, vocab_size: int) -> torch.Tensor:
        """As many words as tags, then END, and at word k a word that took tag k in the
        classifier's training sentences, when it kept those counts (`RestrictsWords`): [L, V]."""
        allowed = words_then_end(len(self.tags), self.max_len, vocab_size)
        lexicon = self.classifier.words_taking(self.tags)
        if lexicon is not None:
            if lexicon.shape[1] != vocab_size:
                raise ValueError(f"the POS classifier counted {lexicon.shape[1]} words, the run has {vocab_size}")
            allowed[1 : len(self.tags) + 1] &= lexicon
        return allowed

    def _build(self, length: int) -> torch.Tensor:
        return self.classifier.target([self.tags], length)


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
    name = "tree"
    classifier: TreeClassifier

    def __init__(self, bracketed: str, *, run: RunOrClassifier, weight: float = 1.0, judge: str | None = None) -> None:
        super().__init__(run, weight=weight, judge=judge)
        self.tree = ParseTree.from_string(bracketed)
        self._build(self.max_len)

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Tree:
        """From the CLI: `--tree "(ROOT (S (NP (PROPN Zizzi)) (VP (AUX is) (ADJP (ADJ cheap))) (PUNCT .)))"`."""
        return cls(spec, run=context.classifier(cls.task), weight=weight, judge=context.judge())

    def score(self, words: Sequence[str]) -> float:
        """Labelled bracket F1 of the output's parse against the target (`bracket_f1`)."""
        return bracket_f1(self._parse_tree(words), self.tree)

    def satisfied(self, words: Sequence[str]) -> bool:
        """The output's parse has the target's words count and labelled brackets."""
        return same_tree(self._parse_tree(words), self.tree)

    def fixed_length(self) -> int:
        return len(self.tree.leaves())

    def allowed_words(self, vocab_size: int) -> torch.Tensor:
        """As many words as the tree has leaves, then END (`RestrictsWords`): [L, V]."""
        return words_then_end(len(self.tree.leaves()), self.max_len, vocab_size)

    def _build(self, length: int) -> torch.Tensor:
        return self.classifier.target([self.tree], length)


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
    name = "span"
    classifier: TreeClassifier

    def __init__(
        self, i: int, j: int, label: str, *, run: RunOrClassifier, weight: float = 1.0, judge: str | None = None
    ) -> None:
        super().__init__(run, weight=weight, judge=judge)
        self.i, self.j, self.label = i, j, label
        self._check_range(self.max_len)
        if label not in self.classifier.span_labels():
            raise ValueError(
                f"unknown constituent label {label!r}; valid labels: {', '.join(self.classifier.span_labels())}"
            )

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Span:
        """From the CLI: `--span "0,2,NP"` (words 0 and 1 form an NP); shares the run's one tree classifier."""
        parts = [part.strip() for part in spec.split(",")]
        if len(parts) != 3 or not parts[2] or not all(part.lstrip("-").isdigit() for part in parts[:2]):
            raise ValueError(f"span must be I,J,LABEL (words I..J−1 form a LABEL phrase), got {spec!r}")
        i, j, label = int(parts[0]), int(parts[1]), parts[2]
        return cls(i, j, label, run=context.classifier(cls.task), weight=weight, judge=context.judge())

    def score(self, words: Sequence[str]) -> float:
        """1 if the output's parse has the constituent (`span_match`)."""
        return span_match(self._parse_tree(words), self.i, self.j, self.label)

    def _check_range(self, length: int) -> None:
        i, j = self.i, self.j
        if not (isinstance(i, int) and isinstance(j, int) and 0 <= i < j <= length - 2):
            raise ValueError(
                f"span ({i}, {j}) is out of range: need 0 ≤ i < j ≤ {length - 2} (words i..j−1 of at most {length - 2})"
            )

    def _log_prob(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        self._check_range(x.shape[1])
        return self.classifier.span_log_prob(x, t, self.i, self.j, self.label)


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
    name = "attribute"
    classifier: AttributeClassifier

    def __init__(
        self, slot: str, value: str, *, run: RunOrClassifier, weight: float = 1.0, judge: str | None = None
    ) -> None:
        super().__init__(run, weight=weight, judge=judge)
        values = self.classifier.values()
        if slot not in values:
            raise ValueError(f"unknown slot {slot!r}; valid slots: {', '.join(values)}")
        if value not in values[slot]:
            raise ValueError(f"unknown value {value!r} for slot {slot!r}; valid values: {', '.join(values[slot])}")
        self.slot, self.value = slot, value

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Attribute:
        """From the CLI: `--attribute "food=Italian"`."""
        slot, value = parse_pair(spec)
        return cls(slot, value, run=context.classifier(cls.task), weight=weight, judge=context.judge())

    def score(self, words: Sequence[str]) -> float:
        """1 if the value is expressed (`expressed`)."""
        return expressed(words, self.slot, self.value, self._judged())

    def _build(self, length: int) -> torch.Tensor:
        return self.classifier.target([{self.slot: self.value}])


class Mentions(ClassifierConstraint):
    """Words the sentence must contain, scored by the run's words classifier: a soft keywords
    constraint, FUDGE's (Keywords writes the words exactly where a sampler can fix words).

    Args:
        words: the keywords.
        run: see `ClassifierConstraint`.
        weight: w_c.

    Raises:
        ValueError: no word, or a word the classifier does not know (named).
    """

    task = "words"
    name = "mentions"
    classifier: WordsClassifier

    def __init__(
        self, words: Sequence[str], *, run: RunOrClassifier, weight: float = 1.0, judge: str | None = None
    ) -> None:
        super().__init__(run, weight=weight, judge=judge)
        self.words = list(words)
        if not self.words:
            raise ValueError("mentions: give at least one word")
        self._build(0)  # names an unknown word now, not at the first sampling step

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Mentions:
        """From the CLI: `--mentions "Zizzi,riverside"`."""
        return cls(keyword_list(spec, context.max_len), run=context.classifier(cls.task), weight=weight)

    def score(self, words: Sequence[str]) -> float:
        """The share of the keywords the sentence contains (1: all of them)."""
        return sum(w in words for w in self.words) / len(self.words)

    def _build(self, length: int) -> torch.Tensor:
        return self.classifier.target([self.words])
