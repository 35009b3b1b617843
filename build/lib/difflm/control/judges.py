"""How a run's outputs are judged: the bundled grammar's exact parser, or a check on the text.

A run on the bundled grammar corpus is judged by its exact parser ("grammar"); real text
("text") by spaCy's tags (POS) or a substring check (slot values), as Diffusion-LM judges
E2E (`difflm.eval.control_metrics`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from difflm.config import Config
from difflm.eval.control_metrics import slot_match, substring_match
from difflm.text.grammar import ParseResult, default_parser

JUDGES = ("grammar", "text")


def judge_of(run_dir: str | Path) -> str:
    """How a run's outputs are judged: "grammar" for a run on the bundled grammar corpus, else "text"."""
    config = Config.load_run(run_dir)
    return "grammar" if config.data.corpus == "grammar" else "text"


@functools.lru_cache(maxsize=4096)
def grammar_parse(words: tuple[str, ...]) -> ParseResult:
    """The exact parser's verdict on one sentence; cached because `score`, `satisfied` and
    every constraint of a sample ask about the same sentence."""
    return default_parser().parse([list(words)])[0]


def expressed(words: Sequence[str], slot: str, value: str, judge: str) -> float:
    """1.0 if the words express slot = value: the parser's slots ("grammar") or a substring ("text"), else 0.0."""
    if judge == "grammar":
        return slot_match(grammar_parse(tuple(words)).slots, slot, value)
    return substring_match(words, value)
