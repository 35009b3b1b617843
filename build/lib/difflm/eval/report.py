"""One evaluation report for a set of sentences: fluency, grammaticality, diversity, novelty.

    evaluate(texts, teacher=pipe, training=train_sentences, grammar=True) -> dict

lm-score follows Diffusion-LM: perplexity under a teacher LM trained on the same corpus
(exp of the per-sentence mean token NLL, averaged over sentences). Given human reference
sentences too, `within_human_range` is the share of sentences whose mean token NLL under the
teacher is at most the 90th percentile of the references' (90% of human text passes by
construction): a per-sentence reading of fluency for corpora without a parser, where one
broken sample no longer hides behind an average. Two strict readings sit beside it:
`repeated_word`, the share of sentences with a word twice back to back ("is is"), and
`below_human_median`, the share the teacher scores worse than the median human sentence.
On the bundled grammar
corpus the exact parser also gives the share of grammatical sentences and the true
NLL per token under the grammar (over the grammatical ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from difflm.eval.diversity import distinct_n, length_stats, novelty, self_bleu
from difflm.model.autoregressive import sentence_nll


def read_texts(path: str | Path, key: str = "text") -> list[str]:
    """Sentences from a text file (one per line) or jsonl (objects with a "text" field, or `key`)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not lines:
        raise ValueError(f"{path}: no sentences")
    if not lines[0].lstrip().startswith("{"):
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        try:
            texts.append(str(json.loads(line)[key]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f'{path}:{number}: expected a JSON object with a "{key}" field') from None
    return texts


def grammar_scores(sentences: Sequence[Sequence[str]]) -> dict[str, float]:
    """Share judged grammatical by the exact parser, and the grammar's NLL per token on those."""
    from difflm.text.grammar import default_parser

    results = default_parser().parse(sentences)
    good = [(r, s) for r, s in zip(results, sentences) if r.grammatical]
    return {
        "grammatical": len(good) / len(sentences),
        "grammar_nll_per_token": sum(-r.logprob / len(s) for r, s in good) / len(good) if good else float("nan"),
    }


def has_repeat(words: Sequence[str]) -> bool:
    """Whether a word follows itself ("coffee coffee shop"), the commonest local error of diffusion LMs."""
    return any(a == b for a, b in zip(words, words[1:]))


#: `within_human_range` passes sentences the teacher finds at least as likely as this share of human ones.
HUMAN_QUANTILE = 0.9


def _teacher_nll(teacher, sentences: Sequence[Sequence[str]]) -> torch.Tensor:  # noqa: ANN001 - an AR Pipeline
    ids, _ = teacher.vocab.encode_batch(sentences, teacher.config.data.max_len, overlong="truncate")
    return sentence_nll(teacher.model, ids)


def evaluate(
    texts: Sequence[str],
    *,
    teacher=None,  # noqa: ANN001 - a difflm Pipeline of an autoregressive run
    training: Sequence[Sequence[str]] | None = None,
    reference: Sequence[str] | None = None,
    grammar: bool = False,
) -> dict[str, float]:
    """All metrics that apply to `texts` (space-tokenised sentences); `reference`: human sentences."""
    if not texts:
        raise ValueError("no sentences to evaluate")
    sentences = [t.split() for t in texts]
    lengths = length_stats(sentences)
    report: dict[str, float] = {
        "n": len(sentences),
        "mean_length": lengths["mean"],
        "min_length": lengths["min"],
        "max_length": lengths["max"],
        "empty": lengths["empty"],
        "repeated_word": sum(has_repeat(s) for s in sentences) / len(sentences),
    }
    for n in (1, 2, 3):
        report[f"distinct_{n}"] = distinct_n(sentences, n)
    if len(sentences) > 1:
        report["self_bleu"] = self_bleu(sentences)
    if training is not None:
        report["novelty"] = novelty(sentences, training)
    if teacher is not None:
        if not teacher.is_autoregressive:
            raise ValueError(
                "the teacher must be an autoregressive run (train it with --set model.kind=autoregressive)"
            )
        nll = _teacher_nll(teacher, sentences)
        report["lm_score"] = math.exp(float(nll.mean()))
        if reference:
            human = _teacher_nll(teacher, [r.split() for r in reference])
            report["within_human_range"] = float((nll <= human.quantile(HUMAN_QUANTILE)).float().mean())
            report["below_human_median"] = float((nll > human.median()).float().mean())
    if grammar:
        report.update(grammar_scores(sentences))
    return report
