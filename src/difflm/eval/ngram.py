"""An interpolated Kneser-Ney trigram LM: a cheap, independent fluency judge.

It shares nothing with the models it judges (no embeddings, no training loop), so a
model cannot score well on it by exploiting its own teacher. Notation (Chen & Goodman
1998, interpolated KN with one discount D):

    P(w | u v) = max(c(u v w) − D, 0) / c(u v ·) + D · N1+(u v ·) / c(u v ·) · P(w | v)
    P(w | v)   = max(N1+(· v w) − D, 0) / N1+(· v ·) + D · N1+(v ·) / N1+(· v ·) · P(w)
    P(w)       = (1 − ε) · N1+(· w) / N1+(· ·) + ε / V        (ε reserves mass for UNK;
                                                             V counts the words that can follow)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


class KneserNeyTrigram:
    """Train with `KneserNeyTrigram(sentences)`, judge with `perplexity(sentences)`."""

    def __init__(self, sentences: Iterable[Sequence[str]], discount: float = 0.75, unk_mass: float = 0.01) -> None:
        self.discount, self.unk_mass = discount, unk_mass
        tri: Counter[tuple[str, str, str]] = Counter()
        for sentence in sentences:
            padded = [BOS, BOS, *sentence, EOS]
            tri.update(zip(padded, padded[1:], padded[2:]))
        if not tri:
            raise ValueError("the n-gram judge needs at least one training sentence")
        self.vocab = {w for gram in tri for w in gram} | {UNK}
        self.num_predictable = len(self.vocab) - 1  # every word but BOS can follow a context
        self.tri = tri
        self.ctx2: Counter[tuple[str, str]] = Counter()  # c(u v ·)
        self.ctx2_types: Counter[tuple[str, str]] = Counter()  # N1+(u v ·)
        self.cont_bi: Counter[tuple[str, str]] = Counter()  # N1+(· v w)
        for (u, v, w), count in tri.items():
            self.ctx2[(u, v)] += count
            self.ctx2_types[(u, v)] += 1
            self.cont_bi[(v, w)] += 1
        self.cont_ctx1: Counter[str] = Counter()  # N1+(· v ·)
        self.ctx1_types: Counter[str] = Counter()  # N1+(v ·)
        self.cont_uni: Counter[str] = Counter()  # N1+(· w)
        for (v, w), count in self.cont_bi.items():
            self.cont_ctx1[v] += count
            self.ctx1_types[v] += 1
            self.cont_uni[w] += 1
        self.total_bigram_types = sum(self.cont_uni.values())

    def _unigram(self, w: str) -> float:
        seen = (1 - self.unk_mass) * self.cont_uni.get(w, 0) / self.total_bigram_types
        return seen + self.unk_mass / self.num_predictable

    def _bigram(self, v: str, w: str) -> float:
        denom = self.cont_ctx1.get(v, 0)
        if denom == 0:
            return self._unigram(w)
        seen = max(self.cont_bi.get((v, w), 0) - self.discount, 0.0) / denom
        return seen + self.discount * self.ctx1_types[v] / denom * self._unigram(w)

    def prob(self, u: str, v: str, w: str) -> float:
        """P(w | u v)."""
        denom = self.ctx2.get((u, v), 0)
        if denom == 0:
            return self._bigram(v, w)
        seen = max(self.tri.get((u, v, w), 0) - self.discount, 0.0) / denom
        return seen + self.discount * self.ctx2_types[(u, v)] / denom * self._bigram(v, w)

    def nll(self, sentence: Sequence[str]) -> tuple[float, int]:
        """Total negative log-likelihood (nats) of a sentence and its END, and the token count."""
        words = [w if w in self.vocab else UNK for w in sentence]
        padded = [BOS, BOS, *words, EOS]
        total = -sum(math.log(self.prob(u, v, w)) for u, v, w in zip(padded, padded[1:], padded[2:]))
        return total, len(words) + 1

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> float:
        """exp(total NLL / total tokens) over a set of sentences (END counted)."""
        total, count = 0.0, 0
        for sentence in sentences:
            nll, n = self.nll(sentence)
            total, count = total + nll, count + n
        if count == 0:
            raise ValueError("no sentences to judge")
        return math.exp(total / count)
