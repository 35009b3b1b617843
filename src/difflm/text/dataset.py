"""A run's data: the corpus split into training and held-out sentences, encoded and padded.

The split is a function of (corpus, data.holdout, train.seed) only, so the trainer, the
classifier trainer and evaluation (novelty, the human reference rows) see the same
held-out sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from difflm.config import Config
from difflm.text.corpora import Corpus, read_corpus, split
from difflm.text.delex import delex_slots, delexicalised
from difflm.text.slots import SlotLabels
from difflm.text.vocab import Vocab

T = TypeVar("T")


@dataclass
class Dataset:
    """Padded id tensors of the training and held-out splits, and their conditions if the model has them."""

    vocab: Vocab
    train: torch.Tensor  # [N, L]
    valid: torch.Tensor  # [M, L]
    report: dict[str, int]
    conditions: SlotLabels | None = None
    train_cond: torch.Tensor | None = None  # [N, P] multi-hot, or [N, S] source ids (model.condition=source)
    valid_cond: torch.Tensor | None = None  # [M, P] or [M, S]


def split_rows(config: Config, rows: Sequence[T]) -> tuple[list[T], list[T]]:
    """The run's (training, held-out) split of rows: `data.holdout` rows (a share if < 1), seeded by `train.seed`."""
    holdout = config.data.holdout
    return split(rows, int(holdout) if holdout >= 1 else holdout, config.train.seed)


def prepare_data(
    config: Config, corpus: Corpus | None = None, vocab: Vocab | None = None, conditions: SlotLabels | None = None
) -> Dataset:
    """Read the corpus, split off the held-out sentences, build (or reuse) the vocabulary and the
    condition labels (model.condition=slots: the training sentences' slot=value pairs), pad.
    Under model.condition=source every sentence needs its source text: the vocabulary covers
    both sides, and each source is a row START s… END PAD… of data.source_len ids
    (delexicalised under data.delexicalise)."""
    corpus = corpus or read_corpus(config.data.corpus)
    train_ex, valid_ex = split_rows(config, corpus.examples)
    if config.data.delexicalise:
        slots = delex_slots(config.data.delex_slots)
        train_ex, valid_ex = ([delexicalised(ex, slots) for ex in part] for part in (train_ex, valid_ex))
    dropped = 0
    if config.data.overlong == "skip":
        # Dropped after the split, so the held-out sentences are the same at every max_len.
        room = config.data.max_len - 2  # START and END take two positions
        kept_train, kept_valid = ([ex for ex in part if len(ex.tokens) <= room] for part in (train_ex, valid_ex))
        dropped = len(train_ex) + len(valid_ex) - len(kept_train) - len(kept_valid)
        if not kept_train or not kept_valid:
            raise ValueError(f"no sentence fits data.max_len={config.data.max_len} (START and END included)")
        train_ex, valid_ex = kept_train, kept_valid
    overlong = "refuse" if config.data.overlong == "skip" else config.data.overlong
    sentences = [ex.tokens for ex in train_ex]
    sourced = config.model.condition == "source"
    if sourced and not all(ex.source for ex in train_ex + valid_ex):
        raise ValueError(
            f"corpus {config.data.corpus!r} has sentences without a source: model.condition=source needs an "
            "e2e: corpus (the MR) or lines:PATH with 'source<TAB>target' lines"
        )
    words = sentences + [ex.source for ex in train_ex] if sourced else sentences
    vocab = vocab or Vocab.build(words, min_count=config.data.min_count)
    train_ids, cut_train = vocab.encode_batch(sentences, config.data.max_len, overlong=overlong)
    valid_ids, cut_valid = vocab.encode_batch([ex.tokens for ex in valid_ex], config.data.max_len, overlong=overlong)
    report = {"train": len(train_ex), "valid": len(valid_ex), "vocab": len(vocab), "truncated": cut_train + cut_valid}
    if dropped:
        report["skipped_overlong"] = dropped
    report.update({f"skipped_{k}": v for k, v in corpus.skipped.items()})
    data = Dataset(vocab, train_ids, valid_ids, report)
    if config.model.condition == "slots":
        data.conditions = conditions or SlotLabels.build(ex.slots for ex in train_ex)
        data.train_cond = data.conditions.encode([ex.slots for ex in train_ex])
        # A held-out pair that training never saw cannot be encoded: it is left out.
        data.valid_cond = data.conditions.encode([ex.slots for ex in valid_ex], strict=False)
        report["conditions"] = len(data.conditions)
    if sourced:
        S = config.data.source_len
        data.train_cond, cut = vocab.encode_batch([ex.source for ex in train_ex], S, overlong="truncate")
        data.valid_cond, cut_valid = vocab.encode_batch([ex.source for ex in valid_ex], S, overlong="truncate")
        report["sources_truncated"] = cut + cut_valid
    return data


def split_sentences(config: Config, vocab: Vocab | None = None) -> tuple[list[list[str]], list[list[str]]]:
    """The run's training and held-out sentences as the model sees them (vocab words, cut to L).

    This is the split `prepare_data` makes, decoded back to tokens: what novelty and the
    human reference rows of an evaluation are measured against.
    """
    data = prepare_data(config, vocab=vocab)
    train, valid = ([data.vocab.decode(row.tolist()) for row in rows] for rows in (data.train, data.valid))
    return train, valid
