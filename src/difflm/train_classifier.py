"""Train a classifier p(c | x_t) on a frozen diffusion run's embeddings (Diffusion-LM §5.1),
p(c | z_t) on a discrete run's noised token rows (its guidance: `control/discrete.py`), or
p(c | w_≤i) on prefixes of an autoregressive run's sentences (FUDGE's future
discriminator, `sampling/fudge.py`).

Notation (as in `classifiers`): w a sentence's word ids [B, L] (START w.. END PAD, from the
run's Vocab); EMB the run's frozen (EMA) embedding table; T the run's training steps.

    k ~ U{0..K},  t = k/T,  x_t = √ᾱ(t)·EMB(w) + √(1 − ᾱ(t))·ε        (k = 0: clean input)
    loss = classifier.loss(x_t, t, c)

With K = T (the default) this is Diffusion-LM's t ~ U{−1..T−1} (−1 = clean) in this
library's time convention, where training index i has time (i+1)/T; K = ⌊max_time·T⌋ < T
trains a classifier for the less noisy end only, which learns in fewer steps.

Labels come from the run's own corpus and its train / held-out split: the bundled grammar's
gold POS tags, trees and slots, or for E2E-style corpora the MR slots (attribute) and
spaCy's POS tags (an optional extra).

The classifier and its logs go to RUN/classifiers/<task>/ (config.json, model.safetensors,
metrics.jsonl).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from difflm.config import Config, TrainConfig
from difflm.control.classifiers import (
    CLASSES,
    NO_SPAN,
    AttributeClassifier,
    ClassifierConfig,
    LatentClassifier,
    PosClassifier,
    TreeClassifier,
    WordsClassifier,
    classifier_dir,
)
from difflm.diffusion.process import q_sample
from difflm.diffusion.schedules import NoiseSchedule
from difflm.loop import TrainingLoop
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.run import load_run
from difflm.text.corpora import read_corpus
from difflm.text.dataset import split_rows
from difflm.text.grammar import load_split
from difflm.text.slots import pair_label
from difflm.text.tagging import SPACY_MODEL, spacy_pos_tags
from difflm.text.vocab import Vocab

Label = Any  # a task's raw annotation of one sentence: POS tags, a Tree, a slot mapping, or its words


#: How classifiers train unless told otherwise: the trainer's settings (`TrainConfig`), with
#: the classifiers' own step count, learning rate and intervals.
CLASSIFIER_TRAINING = TrainConfig(
    steps=2000, batch_size=64, lr=1e-3, warmup=50, grad_clip=1.0, log_every=50, eval_every=250, checkpoint_every=250
)


def classifier_training(**changes: Any) -> TrainConfig:
    """`CLASSIFIER_TRAINING` with some settings changed, e.g. classifier_training(steps=300, lr=6e-3)."""
    return replace(CLASSIFIER_TRAINING, **changes)


@dataclass(frozen=True)
class ClassifierOptions:
    """What classifier training needs beyond the trainer's settings.

    Attributes:
        eval_rows: held-out sentences scored at each evaluation.
        eval_times: the noise levels t at which held-out accuracy is measured.
        prior_rows: training sentences whose label frequencies initialise the output bias.
        max_time: train on t ∈ [0, max_time] only (1 = the whole diffusion, as in Diffusion-LM).
        spacy_model: spaCy pipeline that tags real text for POS classifiers.
    """

    eval_rows: int = 512
    eval_times: tuple[float, ...] = (0.0, 0.3, 0.6)
    prior_rows: int = 2048
    max_time: float = 1.0
    spacy_model: str = SPACY_MODEL


@dataclass
class LabelledSplit:
    """Sentences as id rows [N, L] and each one's raw label."""

    ids: torch.Tensor
    labels: list[Label]


def annotated_splits(
    config: Config,
    task: str,
    *,
    max_rows: int | None = None,
    eval_rows: int | None = None,
    spacy_model: str = SPACY_MODEL,
) -> tuple[list[tuple[Sequence[str], Label]], list[tuple[Sequence[str], Label]]]:
    """(tokens, label) pairs of the run's train and held-out sentences, split as the run split them.

    Args:
        config: the diffusion run's config (corpus, holdout, seed).
        task: one of `classifiers.TASKS`.
        max_rows: keep at most this many training sentences.
        eval_rows: keep at most this many held-out sentences.
        spacy_model: spaCy pipeline used to tag real text (task "pos").

    Raises:
        ValueError: the corpus has no labels for this task (and none can be made offline).
    """
    if task not in CLASSES:
        raise ValueError(f"unknown classifier task {task!r}; valid tasks: {', '.join(CLASSES)}")
    if config.data.corpus == "grammar":
        sentences = load_split("train")  # the "grammar" corpus, in the same order
        train, held = split_rows(config, sentences)
        train, held = train[:max_rows], held[:eval_rows]
        gold: dict[str, Callable] = {
            "pos": lambda s: s.pos,
            "tree": lambda s: s.parse_tree(),
            "attribute": lambda s: s.slots,
            "words": lambda s: s.tokens,
        }
        return [(s.tokens, gold[task](s)) for s in train], [(s.tokens, gold[task](s)) for s in held]
    corpus = read_corpus(config.data.corpus)
    train_ex, held_ex = split_rows(config, corpus.examples)
    train_ex, held_ex = train_ex[:max_rows], held_ex[:eval_rows]
    if task == "words":
        return [(ex.tokens, ex.tokens) for ex in train_ex], [(ex.tokens, ex.tokens) for ex in held_ex]
    if task == "tree":
        raise ValueError(
            f"no gold trees for corpus {config.data.corpus!r}: parsing real text needs benepar, which is not available "
            "offline; train tree classifiers on the bundled grammar corpus"
        )
    if task == "attribute":
        if not any(ex.slots for ex in corpus.examples):
            raise ValueError(
                f"corpus {config.data.corpus!r} has no slot annotations: attribute classifiers need an e2e: corpus"
            )
        return [(ex.tokens, ex.slots) for ex in train_ex], [(ex.tokens, ex.slots) for ex in held_ex]
    tags = spacy_pos_tags([ex.tokens for ex in train_ex + held_ex], spacy_model)
    pairs: list[tuple[Sequence[str], Label]] = [(ex.tokens, tag) for ex, tag in zip(train_ex + held_ex, tags)]
    return pairs[: len(train_ex)], pairs[len(train_ex) :]


def label_set(task: str, labels: Sequence[Label]) -> tuple[str, ...]:
    """The classes of a task given its raw labels (all splits)."""
    if task == "pos":
        return PosClassifier.tag_set()
    if task == "tree":
        counts = Counter(chain for tree in labels for chain in TreeClassifier.cell_labels(tree).values())
        return (NO_SPAN, *sorted(counts, key=lambda c: (-counts[c], c)))
    if task == "words":
        return tuple(sorted({w for words in labels for w in words}))
    return tuple(sorted({pair_label(s, v) for slots in labels for s, v in slots.items()}))


def make_target(classifier: LatentClassifier, labels: Sequence[Label], length: int) -> torch.Tensor:
    """The target tensor of a batch of raw labels (built per batch: full tree charts would not fit in memory)."""
    if isinstance(classifier, (AttributeClassifier, WordsClassifier)):
        return classifier.target(labels)
    assert isinstance(classifier, (PosClassifier, TreeClassifier))  # the other two tasks
    return classifier.target(labels, length)


def noisy_latents(
    table: torch.Tensor, ids: torch.Tensor, schedule: NoiseSchedule, t: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """x_t = √ᾱ(t)·EMB(w) + √(1 − ᾱ(t))·ε for ids [B, L] at times t [B] -> [B, L, d]."""
    x0 = torch.nn.functional.embedding(ids, table)
    abar = schedule.alpha_bar(t.to(torch.float64)).to(x0)[:, None, None]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    return q_sample(x0, abar, noise)


class LatentNoise:
    """A continuous run's noisy latents (`noisy_latents`), at times on its training grid."""

    def __init__(self, table: torch.Tensor, schedule: NoiseSchedule) -> None:
        self.table, self.schedule = table, schedule

    def times(self, B: int, max_time: float, generator: torch.Generator) -> torch.Tensor:
        """t = k/T, k ~ U{0..⌊max_time·T⌋} (k = 0: clean input), [B]."""
        T = self.schedule.num_steps
        return torch.randint(0, int(max_time * T) + 1, (B,), generator=generator, device=generator.device) / T

    def __call__(self, ids: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return noisy_latents(self.table, ids, self.schedule, t, generator)


class TokenNoise:
    """A discrete run's noised rows z_t [B, L] (`TokenDenoiser.noised`: masks or uniform noise),
    at times t ~ U[0, max_time]."""

    def __init__(self, model: TokenDenoiser) -> None:
        self.model = model

    def times(self, B: int, max_time: float, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(B, generator=generator, device=generator.device) * max_time

    def __call__(self, ids: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        words = torch.randint(0, self.model.vocab_size, ids.shape, generator=generator, device=device)
        u = torch.rand(ids.shape, generator=generator, device=device)
        return self.model.noised(ids, t.to(ids.device), u.to(ids.device), words.to(ids.device))


class PrefixNoise:
    """Prefixes of the sentences (FUDGE): the last share t of each row's sentence (its words
    and END) masked with `mask_id`, t ~ U[0, max_time]. START always stays, so every prefix
    length 1 … n+2 is drawn about equally often; the classifier is not told t (at sampling
    time the prefix's share of the unfinished sentence is unknown)."""

    def __init__(self, mask_id: int) -> None:
        self.mask_id = mask_id

    def times(self, B: int, max_time: float, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(B, generator=generator, device=generator.device) * max_time

    def __call__(self, ids: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        ends = (ids == Vocab.END_ID).long().argmax(1)  # a row without END is cut: treated as ending last
        ends = torch.where((ids == Vocab.END_ID).any(1), ends, ids.shape[1] - 1)
        keep = (ends + 1 - (t.to(ids.device) * (ends + 1).float()).floor().long()).clamp_min(1)  # positions kept
        hidden = torch.arange(ids.shape[1], device=ids.device)[None, :] >= keep[:, None]
        return ids.masked_fill(hidden, self.mask_id)


#: How a classifier's training sees a run's sentences: noisy latents, noised token rows or prefixes.
NoisyInputs = LatentNoise | TokenNoise | PrefixNoise


def _batches(
    classifier: LatentClassifier, data: LabelledSplit, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, target) of `data`, batch by batch, on the classifier's device: a chart per sentence is large."""
    device = next(classifier.parameters()).device
    for start in range(0, len(data.labels), batch_size):
        ids = data.ids[start : start + batch_size].to(device)
        yield ids, make_target(classifier, data.labels[start : start + batch_size], ids.shape[1]).to(device)


@torch.no_grad()
def heldout_accuracy(
    classifier: LatentClassifier, data: LabelledSplit, inputs: NoisyInputs, t: float, batch_size: int, seed: int = 0
) -> float:
    """Share of the held-out decisions (tags, constituent labels, slot values) predicted right at noise level t.

    The noise is drawn from `seed`, so points of a learning curve compare.
    """
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = total = 0
    for ids, target in _batches(classifier, data, batch_size):
        x = inputs(ids, torch.full((len(ids),), t, device=device), generator)
        gold, _ = classifier.gold_items(target)
        correct += int((classifier.predicted_items(x, t, target) == gold).sum())
        total += len(gold)
    classifier.train(was_training)
    return correct / max(total, 1)


def majority_accuracy(
    classifier: LatentClassifier, train: LabelledSplit, held: LabelledSplit, batch_size: int
) -> float:
    """The held-out accuracy of always predicting each group's most frequent training class."""

    def decisions(data: LabelledSplit) -> Iterator[tuple[int, int]]:
        """(gold class, group) of each of the split's decisions."""
        for _, target in _batches(classifier, data, batch_size):
            gold, group = classifier.gold_items(target)
            yield from zip(gold.tolist(), group.tolist())

    counts: dict[int, Counter] = {}
    for gold, group in decisions(train):
        counts.setdefault(group, Counter())[gold] += 1
    best = {group: c.most_common(1)[0][0] for group, c in counts.items()}
    held_decisions = list(decisions(held))
    return sum(best.get(group) == gold for gold, group in held_decisions) / max(len(held_decisions), 1)


class ClassifierTrainer(TrainingLoop):
    """Trains a classifier on a run's noisy inputs (noisy latents x_t of its frozen embeddings,
    or its noised token rows), in the one training loop (`difflm.loop`): no EMA, a checkpoint
    is the classifier itself.

    Args:
        classifier: the classifier, on the run's device.
        tc: the trainer's settings (steps, batch size, learning rate, intervals, seed).
        directory: RUN/classifiers/<task>/.
        inputs: how the run's sentences are noised.
        train, held: the labelled training and held-out sentences.
        options: the classifier-specific settings.
        extra: what `save` writes into config.json besides the architecture.
        progress: show a progress bar.
    """

    def __init__(
        self,
        classifier: LatentClassifier,
        tc: TrainConfig,
        directory: Path,
        *,
        inputs: NoisyInputs,
        train: LabelledSplit,
        held: LabelledSplit,
        options: ClassifierOptions,
        extra: dict[str, Any],
        progress: bool,
    ) -> None:
        super().__init__(
            classifier, tc, directory, ema=False, progress=progress, desc=f"train {classifier.config.task} classifier"
        )
        self.classifier, self.inputs = classifier, inputs
        self.train_data, self.held_data, self.options, self.extra = train, held, options, extra
        self.generator = torch.Generator(device=self.device).manual_seed(tc.seed)  # batches and noise
        self.majority = majority_accuracy(classifier, train, held, tc.batch_size)

    def start_writing(self) -> None:
        (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)  # a retrained classifier starts a new log

    def batch_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        B, L = self.tc.batch_size, self.train_data.ids.shape[1]
        batch = torch.randint(len(self.train_data.labels), (B,), generator=self.generator, device=self.device)
        ids = self.train_data.ids[batch.cpu()].to(self.device)
        target = make_target(self.classifier, [self.train_data.labels[i] for i in batch.tolist()], L).to(self.device)
        t = self.inputs.times(B, self.options.max_time, self.generator).to(self.device)
        loss = self.classifier.loss(self.inputs(ids, t, self.generator), t, target)
        return loss, {"loss": loss.item()}

    def evaluate(self) -> dict[str, float]:
        row = {"majority": self.majority}
        for t in self.options.eval_times:
            row[f"accuracy@t={t:g}"] = heldout_accuracy(
                self.classifier, self.held_data, self.inputs, t, self.tc.batch_size
            )
        return row

    def save(self) -> None:
        self.classifier.save(self.out_dir, extra=self.extra)


def train_classifier(
    run_dir: str | Path,
    task: str,
    *,
    training: TrainConfig = CLASSIFIER_TRAINING,
    options: ClassifierOptions = ClassifierOptions(),
    max_rows: int | None = None,
    progress: bool = True,
    architecture: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> Path:
    """Train the run's `task` classifier on its noisy inputs: noisy latents of a continuous
    run's frozen embeddings, a discrete run's noised token rows, or prefixes of the sentences
    for an autoregressive run (FUDGE).

    Args:
        run_dir: a trained run of any kind.
        task: one of `classifiers.TASKS`.
        training: the trainer's settings (`classifier_training(...)`: steps, batch size,
            learning rate, intervals, seed of the initialisation, batches and noise).
        options: the classifier-specific settings (see `ClassifierOptions`).
        max_rows: use at most this many training sentences.
        progress: show a progress bar.
        architecture: `ClassifierConfig` fields (hidden, layers, heads, dropout).
        device: `auto` (CUDA when present), `cpu`, `cuda`, ...

    Returns:
        The classifier directory RUN/classifiers/<task>/.

    Raises:
        ValueError: unknown task or settings, or no labels for the task.
    """
    if training.steps < 1 or training.batch_size < 1 or training.lr <= 0:
        raise ValueError(
            f"steps and batch_size must be ≥ 1 and lr > 0, got {training.steps}, {training.batch_size}, {training.lr}"
        )
    if not 0 <= options.max_time <= 1:
        raise ValueError(f"max_time must lie in [0, 1], got {options.max_time}")
    run = load_run(run_dir, device=device)
    config, model = run.config, run.model
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    L = config.data.max_len
    train_pairs, held_pairs = annotated_splits(
        config, task, max_rows=max_rows, eval_rows=options.eval_rows, spacy_model=options.spacy_model
    )
    if task == "words":  # a word the run cannot write (UNK) is no keyword
        train_pairs, held_pairs = (
            [(tokens, sorted({w for w in words if w in run.vocab})) for tokens, words in pairs]
            for pairs in (train_pairs, held_pairs)
        )
    # Drop sentences that do not fit rather than truncate them: a cut tree has no clean chart.
    train_data, held_data = (
        _labelled(run.vocab, [p for p in pairs if len(p[0]) <= L - 2], L) for pairs in (train_pairs, held_pairs)
    )
    skipped = len(train_pairs) + len(held_pairs) - len(train_data.labels) - len(held_data.labels)
    if not train_data.labels or not held_data.labels:
        raise ValueError(f"no training or held-out sentences fit L = {L} for the {task} classifier")
    try:
        shape = ClassifierConfig(
            task,
            config.model.embed_dim,
            L,
            label_set(task, train_data.labels + held_data.labels),
            **(architecture or {}),
            vocab_size=len(run.vocab) if task == "pos" else 0,
            tokens=0 if isinstance(model, Denoiser) else len(run.vocab) + 1,
            prefixes=isinstance(model, CausalLM),
        )
    except TypeError as err:
        raise ValueError(f"bad classifier architecture {dict(architecture or {})}: {err}") from None

    device_of_run = next(model.parameters()).device
    torch.manual_seed(training.seed)  # initialisation and dropout
    classifier = CLASSES[task](shape).to(device_of_run).train()
    classifier.init_prior(make_target(classifier, train_data.labels[: options.prior_rows], L).to(device_of_run))
    if isinstance(classifier, PosClassifier):
        classifier.count_words(train_data.ids, make_target(classifier, train_data.labels, L))
    directory = classifier_dir(run_dir, task)
    extra: dict[str, Any] = {
        "training": {
            "run": str(run_dir),
            "train_rows": len(train_data.labels),
            "heldout_rows": len(held_data.labels),
            "skipped_overlong": skipped,
            "train": asdict(training),
            "options": asdict(options),
        }
    }
    inputs: NoisyInputs
    if isinstance(model, Denoiser):
        inputs = LatentNoise(model.embedding.table().detach(), model.schedule)
    elif isinstance(model, TokenDenoiser):
        inputs = TokenNoise(model)
    else:
        inputs = PrefixNoise(mask_id=len(run.vocab))
    trainer = ClassifierTrainer(
        classifier,
        training,
        directory,
        inputs=inputs,
        train=train_data,
        held=held_data,
        options=options,
        extra=extra,
        progress=progress,
    )
    last = trainer.run()
    extra["metrics"] = {k: v for k, v in last["valid"].items() if k not in ("step", "split", "elapsed", "cpu_seconds")}
    return classifier.save(directory, extra=extra)


def _labelled(vocab: Vocab, pairs: Sequence[tuple[Sequence[str], Label]], length: int) -> LabelledSplit:
    ids, _ = vocab.encode_batch([tokens for tokens, _ in pairs], length)
    return LabelledSplit(ids, [label for _, label in pairs])
