"""Diversity and novelty of generated text.

distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whole sample set.
novelty: share of generated sentences not copied verbatim from the training corpus.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def distinct_n(sentences: Sequence[Sequence[str]], n: int) -> float:
    """Unique n-grams over total n-grams in all sentences (0 when there are none)."""
    grams = [tuple(s[i : i + n]) for s in sentences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def novelty(sentences: Sequence[Sequence[str]], training: Iterable[Sequence[str]]) -> float:
    """Share of sentences that do not occur verbatim in `training`."""
    if not sentences:
        raise ValueError("no sentences to judge")
    seen = {tuple(s) for s in training}
    return sum(tuple(s) not in seen for s in sentences) / len(sentences)


def length_stats(sentences: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean, min and max length in tokens, and the share of empty outputs."""
    if not sentences:
        raise ValueError("no sentences to judge")
    lengths = [len(s) for s in sentences]
    return {
        "mean": sum(lengths) / len(lengths),
        "min": min(lengths),
        "max": max(lengths),
        "empty": sum(n == 0 for n in lengths) / len(lengths),
    }
