"""Slot values as labels: the "slot=value" pairs of a corpus and their multi-hot encoding.

A sentence's slots (`Example.slots`: the bundled grammar's gold slots, or an E2E meaning
representation) become a multi-hot vector over the pairs seen in training. Attribute
classifiers predict it; a denoiser trained with `model.condition=slots` is conditioned on
it. The label set is saved as JSON (never pickle) so that sampling can map
`food=Italian` to the same index training used.

    labels = SlotLabels.build([{"food": "Italian", "area": "riverside"}, ...])
    labels.encode([{"food": "Italian"}])      # -> float tensor [1, P]
    labels.save(run / "conditions.json")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from difflm import checkpoint

_FORMAT = "difflm.slot_labels"
_VERSION = 1


def pair_label(slot: str, value: str) -> str:
    """The label of one slot value: "food=Italian"."""
    return f"{slot}={value}"


def parse_pair(spec: str) -> tuple[str, str]:
    """ "food=Italian" -> ("food", "Italian"); ValueError unless it is SLOT=VALUE."""
    slot, sep, value = (part.strip() for part in spec.partition("="))
    if not sep or not slot or not value:
        raise ValueError(f"attribute must be SLOT=VALUE, e.g. food=Italian, got {spec!r}")
    return slot, value


def multi_hot(
    slot_maps: Sequence[Mapping[str, str]], labels: Sequence[str], *, strict: bool = True, owner: str = "these labels"
) -> torch.Tensor:
    """Multi-hot float tensor [B, P] of the pairs each mapping holds, over `labels` (P of them).

    Args:
        slot_maps: one slot -> value mapping per row.
        labels: the known "slot=value" pairs, in index order.
        strict: raise on a pair not in `labels`; False leaves it out (e.g. a held-out
            sentence's pair that training never saw).
        owner: what knows the labels, for the error message.

    Raises:
        ValueError: (strict) the unknown pairs, all named.
    """
    index = {label: k for k, label in enumerate(labels)}
    out = torch.zeros(len(slot_maps), len(labels))
    unknown: list[str] = []
    for row, slots in enumerate(slot_maps):
        for slot, value in slots.items():
            label = pair_label(slot, value)
            if label in index:
                out[row, index[label]] = 1.0
            elif label not in unknown:
                unknown.append(label)
    if strict and unknown:
        raise ValueError(f"unknown slot=value pair(s) {', '.join(map(repr, unknown))} for {owner}")
    return out


class SlotLabels:
    """The ordered "slot=value" pairs a conditioned run knows.

    Args:
        labels: the pairs, in index order (no duplicates).

    Raises:
        ValueError: no labels, a duplicate, or a label that is not SLOT=VALUE.
    """

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)
        if not self.labels:
            raise ValueError("a slot label set needs at least one slot=value pair")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("duplicate slot=value labels")
        for label in self.labels:
            parse_pair(label)

    @classmethod
    def build(cls, slot_maps: Iterable[Mapping[str, str]]) -> SlotLabels:
        """Every pair of the given sentences, sorted.

        Raises:
            ValueError: no sentence has a slot (a corpus without annotations).
        """
        pairs = sorted({pair_label(s, v) for slots in slot_maps for s, v in slots.items()})
        if not pairs:
            raise ValueError(
                "the corpus has no slot annotations: conditioning on slots needs the grammar corpus or an e2e: corpus"
            )
        return cls(pairs)

    def __len__(self) -> int:
        return len(self.labels)

    def values(self) -> dict[str, list[str]]:
        """Slot -> its known values."""
        out: dict[str, list[str]] = {}
        for label in self.labels:
            slot, value = label.split("=", 1)
            out.setdefault(slot, []).append(value)
        return out

    def encode(self, slot_maps: Sequence[Mapping[str, str]], *, strict: bool = True) -> torch.Tensor:
        """Multi-hot [B, P]; see `multi_hot` (strict: unknown pairs raise ValueError naming them)."""
        return multi_hot(slot_maps, self.labels, strict=strict, owner="this run's conditioning")

    def save(self, path: str | Path) -> None:
        """Write the label set as JSON (atomically)."""
        meta = {"format": _FORMAT, "version": _VERSION, "labels": list(self.labels)}
        checkpoint.atomic_write_text(Path(path), json.dumps(meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> SlotLabels:
        """Read a label set written by `save`; ValueError names a missing or corrupt file."""
        meta = checkpoint.read_json(Path(path))
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or meta.get("version") != _VERSION:
            raise ValueError(f"{path} is not a difflm slot label file ({_FORMAT!r} v{_VERSION})")
        labels = meta.get("labels")
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ValueError(f"corrupt slot labels in {path}: 'labels' must be a list of strings")
        return cls(labels)
