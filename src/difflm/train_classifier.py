"""Train a classifier p(c | x_t) on a frozen diffusion run's embeddings (Diffusion-LM §5.1).

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

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from difflm import checkpoint
from difflm.config import Config
from difflm.control.classifiers import (
    CLASSES,
    NO_SPAN,
    AttributeClassifier,
    ClassifierConfig,
    LatentClassifier,
    PosClassifier,
    TreeClassifier,
    classifier_dir,
)
from difflm.diffusion.process import q_sample
from difflm.diffusion.schedules import NoiseSchedule
from difflm.model.denoiser import Denoiser
from difflm.run import load_run
from difflm.text.corpora import read_corpus
from difflm.text.dataset import split_rows
from difflm.text.grammar import load_split
from difflm.text.slots import pair_label
from difflm.text.tagging import SPACY_MODEL, spacy_pos_tags
from difflm.text.vocab import Vocab

Label = Any  # a task's raw annotation of one sentence: POS tags, a Tree, or a slot mapping


@dataclass(frozen=True)
class TrainOptions:
    """Settings of classifier training beyond the basic ones of `train_classifier`.

    Attributes:
        warmup: steps of linear learning-rate warmup (then linear decay to 0).
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm (0 = off).
        log_every: steps between training-loss rows of metrics.jsonl.
        eval_every: steps between held-out accuracy rows (and one at the end).
        eval_rows: held-out sentences scored at each evaluation.
        eval_times: the noise levels t at which held-out accuracy is measured.
        prior_rows: training sentences whose label frequencies initialise the output bias.
        max_time: train on t ∈ [0, max_time] only (1 = the whole diffusion, as in Diffusion-LM).
        spacy_model: spaCy pipeline that tags real text for POS classifiers.
        device: `auto` (CUDA when present), `cpu`, `cuda`, ...
    """

    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    log_every: int = 50
    eval_every: int = 250
    eval_rows: int = 512
    eval_times: tuple[float, ...] = (0.0, 0.3, 0.6)
    prior_rows: int = 2048
    max_time: float = 1.0
    spacy_model: str = SPACY_MODEL
    device: str = "auto"


@dataclass
class LabelledSplit:
    """Sentences as id rows [N, L] and each one's raw label."""

    ids: torch.Tensor
    labels: list[Label]


def annotated_splits(config: Config, task: str, *, max_rows: int | None = None, eval_rows: int | None = None,
                     spacy_model: str = TrainOptions.spacy_model) -> tuple[list[tuple[Sequence[str], Label]], list[tuple[Sequence[str], Label]]]:
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
        gold: dict[str, Callable] = {"pos": lambda s: s.pos, "tree": lambda s: s.parse_tree(), "attribute": lambda s: s.slots}
        return [(s.tokens, gold[task](s)) for s in train], [(s.tokens, gold[task](s)) for s in held]
    corpus = read_corpus(config.data.corpus)
    train_ex, held_ex = split_rows(config, corpus.examples)
    train_ex, held_ex = train_ex[:max_rows], held_ex[:eval_rows]
    if task == "tree":
        raise ValueError(
            f"no gold trees for corpus {config.data.corpus!r}: parsing real text needs benepar, which is not available "
            "offline; train tree classifiers on the bundled grammar corpus"
        )
    if task == "attribute":
        if not any(ex.slots for ex in corpus.examples):
            raise ValueError(f"corpus {config.data.corpus!r} has no slot annotations: attribute classifiers need an e2e: corpus")
        return [(ex.tokens, ex.slots) for ex in train_ex], [(ex.tokens, ex.slots) for ex in held_ex]
    tags = spacy_pos_tags([ex.tokens for ex in train_ex + held_ex], spacy_model)
    pairs = [(ex.tokens, tag) for ex, tag in zip(train_ex + held_ex, tags)]
    return pairs[: len(train_ex)], pairs[len(train_ex) :]


def label_set(task: str, labels: Sequence[Label]) -> tuple[str, ...]:
    """The classes of a task given its raw labels (all splits)."""
    if task == "pos":
        return PosClassifier.tag_set()
    if task == "tree":
        counts: dict[str, int] = {}
        for tree in labels:
            for chain in TreeClassifier.cell_labels(tree).values():
                counts[chain] = counts.get(chain, 0) + 1
        return (NO_SPAN, *sorted(counts, key=lambda c: (-counts[c], c)))
    return tuple(sorted({pair_label(s, v) for slots in labels for s, v in slots.items()}))


def make_target(classifier: LatentClassifier, labels: Sequence[Label], length: int) -> torch.Tensor:
    """The target tensor of a batch of raw labels (built per batch: full tree charts would not fit in memory)."""
    if isinstance(classifier, AttributeClassifier):
        return classifier.target(labels)
    return classifier.target(labels, length)  # type: ignore[attr-defined]


def noisy_latents(table: torch.Tensor, ids: torch.Tensor, schedule: NoiseSchedule, t: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """x_t = √ᾱ(t)·EMB(w) + √(1 − ᾱ(t))·ε for ids [B, L] at times t [B] -> [B, L, d]."""
    x0 = torch.nn.functional.embedding(ids, table)
    abar = schedule.alpha_bar(t.to(torch.float64)).to(x0)[:, None, None]
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    return q_sample(x0, abar, noise)


@torch.no_grad()
def heldout_accuracy(classifier: LatentClassifier, data: LabelledSplit, table: torch.Tensor, schedule: NoiseSchedule,
                     t: float, batch_size: int, seed: int = 0) -> float:
    """Share of the held-out decisions (tags, constituent labels, slot values) predicted right at noise level t.

    The noise is drawn from `seed`, so points of a learning curve compare.
    """
    was_training = classifier.training
    classifier.eval()
    generator = torch.Generator(device=table.device).manual_seed(seed)
    correct = total = 0
    for start in range(0, len(data.labels), batch_size):
        ids = data.ids[start : start + batch_size].to(table.device)
        target = make_target(classifier, data.labels[start : start + batch_size], ids.shape[1]).to(table.device)
        x = noisy_latents(table, ids, schedule, torch.full((len(ids),), t, device=table.device), generator)
        gold, _ = classifier.gold_items(target)
        correct += int((classifier.predicted_items(x, t, target) == gold).sum())
        total += len(gold)
    classifier.train(was_training)
    return correct / max(total, 1)


def majority_accuracy(classifier: LatentClassifier, train: LabelledSplit, held: LabelledSplit, batch_size: int) -> float:
    """The held-out accuracy of always predicting each group's most frequent training class."""
    device = next(classifier.parameters()).device

    def items(data: LabelledSplit, start: int) -> tuple[list[int], list[int]]:
        target = make_target(classifier, data.labels[start : start + batch_size], data.ids.shape[1]).to(device)
        gold, group = classifier.gold_items(target)
        return gold.tolist(), group.tolist()

    counts: dict[int, Counter] = {}
    for start in range(0, len(train.labels), batch_size):  # in batches: a chart per sentence is large
        for gold, group in zip(*items(train, start)):
            counts.setdefault(group, Counter())[gold] += 1
    best = {group: c.most_common(1)[0][0] for group, c in counts.items()}
    correct = total = 0
    for start in range(0, len(held.labels), batch_size):
        for gold, group in zip(*items(held, start)):
            correct += best.get(group) == gold
            total += 1
    return correct / max(total, 1)


def train_classifier(
    run_dir: str | Path,
    task: str,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    max_rows: int | None = None,
    progress: bool = True,
    architecture: Mapping[str, Any] | None = None,
    options: TrainOptions | None = None,
) -> Path:
    """Train the run's `task` classifier on noisy latents of its frozen embeddings.

    Args:
        run_dir: a trained diffusion run.
        task: "attribute", "pos" or "tree".
        steps: optimizer steps.
        batch_size: sentences per step.
        lr: peak AdamW learning rate.
        seed: seed of the initialisation, batches and noise.
        max_rows: use at most this many training sentences.
        progress: show a progress bar.
        architecture: `ClassifierConfig` fields (hidden, layers, heads, dropout).
        options: the remaining settings (see `TrainOptions`).

    Returns:
        The classifier directory RUN/classifiers/<task>/.

    Raises:
        ValueError: not a diffusion run, unknown task or settings, or no labels for the task.
    """
    options = options or TrainOptions()
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"steps and batch_size must be ≥ 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    if not 0 <= options.max_time <= 1:
        raise ValueError(f"max_time must lie in [0, 1], got {options.max_time}")
    run = load_run(run_dir, device=options.device)
    if not isinstance(run.model, Denoiser):
        raise ValueError(f"{run_dir} is an autoregressive run: classifiers guide diffusion runs")
    config, denoiser = run.config, run.model
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    L = config.data.max_len
    train_pairs, held_pairs = annotated_splits(config, task, max_rows=max_rows, eval_rows=options.eval_rows,
                                               spacy_model=options.spacy_model)
    # Drop sentences that do not fit rather than truncate them: a cut tree has no clean chart.
    train_data, held_data = (
        _labelled(run.vocab, [p for p in pairs if len(p[0]) <= L - 2], L) for pairs in (train_pairs, held_pairs)
    )
    skipped = len(train_pairs) + len(held_pairs) - len(train_data.labels) - len(held_data.labels)
    if not train_data.labels or not held_data.labels:
        raise ValueError(f"no training or held-out sentences fit L = {L} for the {task} classifier")
    try:
        shape = ClassifierConfig(task, denoiser.config.embed_dim, L, label_set(task, train_data.labels + held_data.labels),
                                 **(architecture or {}))
    except TypeError as err:
        raise ValueError(f"bad classifier architecture {dict(architecture or {})}: {err}") from None

    device = next(denoiser.parameters()).device
    torch.manual_seed(seed)  # initialisation and dropout
    classifier = CLASSES[task](shape).to(device).train()
    classifier.init_prior(make_target(classifier, train_data.labels[: options.prior_rows], L).to(device))
    table = denoiser.embedding.table().detach()  # frozen EMB, [V, d]
    schedule = denoiser.schedule
    last_k = int(options.max_time * schedule.num_steps)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=options.weight_decay)
    decay = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(options.warmup, 1)) * max(0.0, 1 - s / steps)
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    directory = classifier_dir(run_dir, task)
    rows: list[dict] = []
    majority = majority_accuracy(classifier, train_data, held_data, batch_size)

    bar = tqdm(range(steps), disable=not progress, desc=f"train {task} classifier", dynamic_ncols=True)
    running: list[float] = []
    for step in bar:
        batch = torch.randint(len(train_data.labels), (batch_size,), generator=generator, device=device)
        ids = train_data.ids[batch.cpu()].to(device)
        target = make_target(classifier, [train_data.labels[i] for i in batch.tolist()], L).to(device)
        t = torch.randint(0, last_k + 1, (batch_size,), generator=generator, device=device) / schedule.num_steps
        loss = classifier.loss(noisy_latents(table, ids, schedule, t, generator), t, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(classifier.parameters(), options.grad_clip)
        optimizer.step()
        decay.step()
        running.append(loss.item())
        done = step + 1
        if done % options.log_every == 0 or done == steps:
            rows.append({"step": done, "split": "train", "loss": sum(running) / len(running), "lr": decay.get_last_lr()[0]})
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
            running = []
        if done % options.eval_every == 0 or done == steps:
            row = {"step": done, "split": "valid", "majority": majority}
            for t_eval in options.eval_times:
                row[f"accuracy@t={t_eval:g}"] = heldout_accuracy(classifier, held_data, table, schedule, t_eval, batch_size)
            rows.append(row)
            checkpoint.atomic_write_text(directory / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    bar.close()
    training = {"run": str(run_dir), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                "train_rows": len(train_data.labels), "heldout_rows": len(held_data.labels), "skipped_overlong": skipped,
                "options": asdict(options)}
    final = {k: v for k, v in rows[-1].items() if k not in ("step", "split")}
    return classifier.save(directory, extra={"training": training, "metrics": final})


def _labelled(vocab: Vocab, pairs: Sequence[tuple[Sequence[str], Label]], length: int) -> LabelledSplit:
    ids, _ = vocab.encode_batch([tokens for tokens, _ in pairs], length)
    return LabelledSplit(ids, [label for _, label in pairs])
