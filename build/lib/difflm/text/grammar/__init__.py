"""The bundled restaurant grammar corpus: sampling, gold POS / trees / slots, exact parsing.

Demos and tests train on sentences sampled from a hand-written PCFG of E2E-style
restaurant descriptions, so they run offline and generated text can be judged exactly:
:class:`ChartParser` says whether a token sequence is grammatical and gives its exact
log-probability and most probable tree.

    >>> from difflm.text.grammar import default_grammar, default_parser
    >>> s = default_grammar().sample(1, seed=0)[0]
    >>> default_parser().parse([s.tokens])[0].grammatical
    True

Importing this module registers the corpus ``"grammar"`` (the train split) with
:func:`difflm.text.corpora.register_corpus`.
"""

from __future__ import annotations

import functools
import random

from difflm.text.corpora import Corpus, Example, register_corpus
from difflm.text.grammar.parser import ChartParser, ParseResult
from difflm.text.grammar.pcfg import UPOS_TAGS, Grammar, GrammarSentence, Rule, Terminal
from difflm.text.grammar.restaurant import restaurant_grammar
from difflm.text.grammar.tree import Tree

__all__ = [
    "SPLITS",
    "UPOS_TAGS",
    "ChartParser",
    "Grammar",
    "GrammarSentence",
    "ParseResult",
    "Rule",
    "Terminal",
    "Tree",
    "default_grammar",
    "default_parser",
    "load_split",
    "make_splits",
]

SPLITS = ("train", "valid", "test")


@functools.cache
def default_grammar() -> Grammar:
    """The bundled restaurant grammar (built once)."""
    return restaurant_grammar()


@functools.cache
def default_parser() -> ChartParser:
    """The exact parser of the bundled grammar (compiled once)."""
    return ChartParser(default_grammar())


def make_splits(seed: int = 0, sizes: tuple[int, int, int] = (50000, 2000, 2000)) -> dict[str, list[GrammarSentence]]:
    """Samples train / valid / test sets from the default grammar.

    Each split has its own random stream derived from ``seed``, so changing one size leaves
    the other splits unchanged. Sentences are drawn independently: a short sentence can occur
    in several splits (as the same sentence would in real text).

    Args:
        seed: the same seed gives the same splits.
        sizes: number of sentences of train, valid and test.

    Raises:
        ValueError: ``sizes`` does not have three non-negative entries.
    """
    if len(sizes) != len(SPLITS) or any(n < 0 for n in sizes):
        raise ValueError(f"sizes must be three non-negative counts (train, valid, test), got {sizes!r}")
    streams = random.Random(seed)
    seeds = [streams.getrandbits(64) for _ in SPLITS]
    return {name: default_grammar().sample(n, s) for name, n, s in zip(SPLITS, sizes, seeds)}


@functools.cache
def _default_splits() -> dict[str, tuple[GrammarSentence, ...]]:
    return {name: tuple(sentences) for name, sentences in make_splits().items()}


def load_split(name: str) -> list[GrammarSentence]:
    """One split of ``make_splits()`` (default seed and sizes), sampled once per process.

    Raises:
        ValueError: ``name`` is not one of SPLITS.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown grammar split {name!r}: expected one of {', '.join(SPLITS)}")
    return list(_default_splits()[name])


def _load_corpus() -> Corpus:
    """The train split as a corpus of examples with their slots."""
    examples = [Example(tokens=s.tokens, slots=s.slots) for s in load_split("train")]
    return Corpus(examples=examples, source="grammar", skipped={})


register_corpus("grammar", _load_corpus)
