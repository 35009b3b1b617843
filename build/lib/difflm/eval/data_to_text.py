"""Data-to-text evaluation, as the E2E challenge judges it: multi-reference BLEU (sacrebleu),
ROUGE-L, and the slot error rate.

Notation: an output o (tokens), its references r_1 … r_k (the human sentences of the same
MR), its MR m (slot -> value).

    BLEU     corpus BLEU-4 of the outputs against every reference of their MR (sacrebleu,
             its 13a tokenisation, a variable number of references per MR)
    ROUGE-L  the E2E metrics' (coco-caption's) form: with LCS the longest common
             subsequence, P = max_j LCS(o, r_j)/|o|, R = max_j LCS(o, r_j)/|r_j|,
             score = (1 + β²)·P·R / (R + β²·P), β = 1.2, averaged over outputs
    SER      (missing + added) / Σ |m|: a slot of the MR whose value the output does not
             realise is missing; a value the output realises that its MR does not hold (a
             known value of a slot, seen in any MR) is added — the E2E challenge's slot
             error rate (Dušek et al. 2019), by pattern matching

How a value is realised (`realises`): its tokens appear in order, case-insensitive, or (the
slots with a fixed set of values: eatType, priceRange, customer rating, familyFriendly)
one of a few common paraphrases does ("cheap" for "less than £ 20", "kid friendly" for
familyFriendly=yes, "not family - friendly" for no). Pattern matching misses rarer
paraphrases, so SER is a slight over-estimate for every system alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from difflm.text.corpora import Corpus, Example

#: Paraphrases of the categorical slots' values (lowercase token strings), beside the value itself.
PARAPHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "priceRange": {
        "cheap": ("low price", "low - price", "inexpensive", "affordable", "low cost", "low prices"),
        "less than £ 20": ("cheap", "under £ 20", "below £ 20", "less than 20", "low price", "inexpensive"),
        "moderate": ("moderately priced", "average price", "mid price", "mid - price", "medium price"),
        "£ 20 - 25": ("20 - 25", "twenty to twenty five", "moderate", "average price"),
        "high": ("expensive", "high price", "high - price", "pricey", "high - priced", "high priced"),
        "more than £ 30": ("more than 30", "over £ 30", "above £ 30", "expensive", "high price"),
    },
    "customer rating": {
        "low": ("1 out of 5", "one star", "1 star", "poorly rated", "low rating", "low customer rating"),
        "1 out of 5": ("low", "one star", "1 star", "1 - star"),
        "average": ("3 out of 5", "three star", "3 star", "average rating", "average customer rating"),
        "3 out of 5": ("average", "three star", "3 star", "3 - star"),
        "high": ("5 out of 5", "five star", "5 star", "highly rated", "high rating", "high customer rating"),
        "5 out of 5": ("high", "five star", "5 star", "5 - star", "highly rated"),
    },
    "eatType": {
        "coffee shop": ("coffee - shop", "café", "cafe", "coffeeshop"),
        "pub": ("bar",),
        "restaurant": ("eatery", "diner", "place to eat"),
    },
}
_FRIENDLY = ("family friendly", "family - friendly", "kid friendly", "kid - friendly", "child friendly",
             "child - friendly", "children friendly", "children - friendly", "kids friendly", "kids - friendly",
             "families", "children", "kids", "family")  # fmt: skip
_NEGATIONS = {"not", "n't", "'t", "no", "non", "adults", "adult", "isn", "doesn", "without"}


def _tokens(text: str | Sequence[str]) -> list[str]:
    return [w.lower() for w in (text.split() if isinstance(text, str) else text)]


def _find(words: list[str], phrase: str) -> list[int]:
    """Start indices of a phrase's tokens in words."""
    target = phrase.lower().split()
    n = len(target)
    return [i for i in range(len(words) - n + 1) if words[i : i + n] == target]


def realises(output: str | Sequence[str], slot: str, value: str) -> bool:
    """Whether the output says slot = value (module docstring)."""
    words = _tokens(output)
    if slot == "familyFriendly":
        hits = [i for phrase in _FRIENDLY for i in _find(words, phrase)]
        negated = any(set(words[max(0, i - 3) : i]) & _NEGATIONS for i in hits)
        return bool(hits) and negated == (value.lower() == "no")
    phrases = (value, *PARAPHRASES.get(slot, {}).get(value.lower(), ()))
    return any(_find(words, phrase) for phrase in phrases)


def slot_errors(
    output: str | Sequence[str], mr: Mapping[str, str], known: Mapping[str, Iterable[str]]
) -> tuple[int, int]:
    """(missing, added) of one output against its MR. `known` lists each slot's values (all
    MRs); a known value counts as added when its own words appear outside the MR's values and
    no slot of the MR holds it (a name the MR gives as `near` is not added), familyFriendly when
    it is mentioned at all, and a delexicalisation placeholder (`X-food`) left in the output."""
    words = _tokens(output)
    missing = sum(not realises(words, slot, value) for slot, value in mr.items())
    held = {value.lower() for value in mr.values()}
    # The MR's own values are blanked before looking for others: "Indian" inside the near
    # value "Raja Indian Cuisine" is not a food the output adds.
    rest = list(words)
    for value in sorted(held, key=lambda v: -len(v.split())):
        size = len(value.split())
        for i in _find(rest, value):
            rest[i : i + size] = [""] * size
    # A placeholder left as written (`text/delex.py`) says a slot the MR does not hold.
    slot_names = {slot.lower() for slot in known}
    added = sum(1 for word in rest if word.startswith("x-") and word[2:] in slot_names)
    for slot, values in known.items():
        if slot == "familyFriendly":
            added += slot not in mr and any(realises(words, slot, v) for v in ("yes", "no"))
        else:
            added += sum(1 for v in set(values) if v.lower() not in held and _find(rest, v))
    return missing, added


def slot_error_rate(
    outputs: Sequence[str | Sequence[str]], mrs: Sequence[Mapping[str, str]], known: Mapping[str, Iterable[str]]
) -> float:
    """SER = (missing + added) / the number of MR slots, over all outputs (module docstring)."""
    if len(outputs) != len(mrs):
        raise ValueError(f"{len(outputs)} outputs for {len(mrs)} MRs")
    total = sum(len(mr) for mr in mrs)
    if not total:
        raise ValueError("the MRs have no slots")
    errors = sum(sum(slot_errors(o, mr, known)) for o, mr in zip(outputs, mrs))
    return errors / total


def bleu(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4 (0–100) of outputs against their references (a list per output; sacrebleu)."""
    try:
        import sacrebleu
    except ImportError:
        raise ValueError("BLEU needs sacrebleu: pip install 'difflm[eval]'") from None
    if len(outputs) != len(references) or any(not refs for refs in references):
        raise ValueError("every output needs at least one reference")
    most = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(most)]
    # force: outputs and references are both tokenised (src1's "food ."), which sacrebleu
    # would otherwise warn about; its 13a tokenizer leaves such text as it is.
    score = sacrebleu.corpus_bleu(list(outputs), streams, force=True)  # type: ignore[arg-type]  # None: no ref
    return float(score.score)


def _lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(outputs: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """Mean ROUGE-L F (0–100) of the outputs, coco-caption's multi-reference form (module docstring)."""
    if len(outputs) != len(references) or any(not refs for refs in references):
        raise ValueError("every output needs at least one reference")
    scores = []
    for output, refs in zip(outputs, references):
        o = output.split()
        lcs = [_lcs(o, r.split()) for r in refs]
        precision = max(c / max(len(o), 1) for c in lcs)
        recall = max(c / max(len(r.split()), 1) for c, r in zip(lcs, refs))
        f = (1 + beta**2) * precision * recall / (recall + beta**2 * precision) if precision and recall else 0.0
        scores.append(f)
    return 100 * sum(scores) / len(scores)


def mbr_pick(candidates: Sequence[str]) -> int:
    """Minimum Bayes risk selection (DiffuSeq): the index of the candidate whose mean sentence
    BLEU against the other candidates is highest (the first one when there is a single one)."""
    if len(candidates) < 2:
        return 0
    import sacrebleu

    def agreement(i: int) -> float:
        others = [c for j, c in enumerate(candidates) if j != i]
        return sum(sacrebleu.sentence_bleu(candidates[i], [o]).score for o in others) / len(others)

    return max(range(len(candidates)), key=agreement)


@dataclass
class Reference:
    """One MR of a reference corpus: its slots and every human sentence written from it."""

    slots: Mapping[str, str]
    sentences: list[str] = field(default_factory=list)


def known_values(examples: Iterable[Example]) -> dict[str, set[str]]:
    """Each slot's values over the examples' MRs: what `slot_errors` counts as added when said."""
    known: dict[str, set[str]] = {}
    for example in examples:
        for slot, value in example.slots.items():
            known.setdefault(slot, set()).add(value)
    return known


def references_by_source(corpus: Corpus) -> dict[tuple[str, ...], Reference]:
    """The corpus's MRs, keyed by their linearised source in order of first appearance.

    Raises:
        ValueError: a sentence without a source (not a data-to-text corpus).
    """
    out: dict[tuple[str, ...], Reference] = {}
    for example in corpus.examples:
        if not example.source:
            raise ValueError(f"{corpus.source}: a sentence has no source; references need an e2e: corpus")
        out.setdefault(example.source, Reference(example.slots)).sentences.append(" ".join(example.tokens))
    return out


def score(outputs: Sequence[str], references: Sequence[Reference], known: Mapping[str, Iterable[str]]) -> dict:
    """BLEU, ROUGE-L and the slot error rate (with its missing and added counts) of outputs, one
    per reference MR."""
    texts = [r.sentences for r in references]
    mrs = [r.slots for r in references]
    errors = [slot_errors(o, mr, known) for o, mr in zip(outputs, mrs)]
    slots = sum(len(mr) for mr in mrs)
    return {
        "outputs": len(outputs),
        "bleu": round(bleu(outputs, texts), 2),
        "rouge_l": round(rouge_l(outputs, texts), 2),
        "slot_error_rate": round(slot_error_rate(outputs, mrs, known), 4),
        "missing": sum(m for m, _ in errors),
        "added": sum(a for _, a in errors),
        "slots": slots,
    }
