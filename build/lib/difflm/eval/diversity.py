"""Diversity and novelty of generated text.

distinct-n (Li et al. 2016): unique n-grams / all n-grams over the whole sample set.
novelty: share of generated sentences not copied verbatim from the training corpus.
self-BLEU (Zhu et al. 2018, Texygen): mean BLEU of each sentence against the others.
"""

from __future__ import annotations

import math
from collections import Counter
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


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Sentence BLEU-4 (Papineni et al. 2002) with add-one smoothing of the n-gram precisions
    for n > 1 (Lin & Och 2004), so short sentences do not score 0 on one missing 4-gram."""
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        max_ref: Counter[tuple[str, ...]] = Counter()
        for ref in references:
            max_ref |= _ngrams(ref, n)
        hyp = _ngrams(hypothesis, n)
        matches = sum(min(c, max_ref[g]) for g, c in hyp.items())
        total = sum(hyp.values())
        smooth = 0 if n == 1 else 1
        if matches + smooth == 0 or total + smooth == 0:
            return 0.0
        log_precision += math.log((matches + smooth) / (total + smooth)) / max_n
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = min(0.0, 1 - closest / len(hypothesis))
    return math.exp(brevity + log_precision)


def self_bleu(sentences: Sequence[Sequence[str]], max_sentences: int = 200) -> float:
    """Mean BLEU-4 of each sentence against all the others (Zhu et al. 2018); lower is more diverse.

    O(n²): only the first `max_sentences` are used.
    """
    subset = list(sentences[:max_sentences])
    if len(subset) < 2:
        raise ValueError("self-BLEU needs at least two sentences")
    return sum(bleu(s, subset[:i] + subset[i + 1 :]) for i, s in enumerate(subset)) / len(subset)
