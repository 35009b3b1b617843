"""Delexicalisation for data-to-text (`data.delexicalise`): slot values become placeholders.

An E2E MR's `name` and `near` values are proper names from an open set: a test MR may name a
restaurant that the training split never shows (trained on the dev split, 36% of the test
split's references do), and a model can only write the words of its vocabulary. As in the
E2E challenge's baseline (TGen, Dušek and Jurčíček 2016) and most of its systems, each such
value is replaced in the source and in the sentence by a placeholder word (`X-name`,
`X-near`), so the model learns "X-name is near X-near", and the value is put back after
decoding (`relexicalise`). Which slots is the run's `data.delex_slots`: the same holds for
any slot whose values the sentences say verbatim (`food`, `eatType`) when the training split
shows only some of them, as E2E's dev split does (one eatType, two foods). The sentence's
occurrences of a value are found case-insensitively, longest value first; a placeholder
whose slot the MR lacks stays as it is written, so a hallucinated slot shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from difflm.text.corpora import Example, mr_slots

#: The slots whose values the sentences say word for word, so a placeholder can stand for them
#: (the others are paraphrased: "cheap" for "less than £ 20", "kid friendly" for yes).
VERBATIM_SLOTS = ("name", "eatType", "food", "area", "near")

Values = Mapping[str, tuple[str, ...]]  # slot -> its value's tokens


def placeholder(slot: str) -> str:
    """The word that stands for a slot's value: TGen's spelling."""
    return f"X-{slot}"


def delex_slots(spec: str) -> tuple[str, ...]:
    """The slots of a `data.delex_slots` spec ("name,near").

    Raises:
        ValueError: an unknown slot, or none.
    """
    slots = tuple(slot.strip() for slot in spec.split(",") if slot.strip())
    unknown = [slot for slot in slots if slot not in VERBATIM_SLOTS]
    if unknown or not slots:
        raise ValueError(f"data.delex_slots must name slots of {', '.join(VERBATIM_SLOTS)}, got {spec!r}")
    return slots


def open_values(source: Sequence[str], slots: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The values of `slots` in a linearised MR source (none for any other text)."""
    given = mr_slots(source)
    return {slot: tuple(given[slot].split()) for slot in slots if slot in given}


def delexicalise(tokens: Sequence[str], values: Values) -> tuple[str, ...]:
    """`tokens` with each occurrence of each value replaced by its slot's placeholder."""
    out = list(tokens)
    for slot, value in sorted(values.items(), key=lambda item: -len(item[1])):
        folded = [word.lower() for word in value]
        i, kept = 0, []
        while i < len(out):
            if [word.lower() for word in out[i : i + len(value)]] == folded:
                kept.append(placeholder(slot))
                i += len(value)
            else:
                kept.append(out[i])
                i += 1
        out = kept
    return tuple(out)


def relexicalise(text: str, values: Values) -> str:
    """A written sentence with each placeholder of a slot the MR has replaced by its value."""
    names = {placeholder(slot): " ".join(value) for slot, value in values.items()}
    return " ".join(names.get(word, word) for word in text.split())


def placeholder_errors(text: str, values: Values, slots: Sequence[str]) -> int:
    """How far a written (still delexicalised) sentence is from saying exactly its MR's
    delexicalised slots: the slots of `slots` the MR holds (`values`) whose placeholder it does
    not write, plus those it does not hold whose placeholder it writes."""
    words = set(text.split())
    return sum((placeholder(slot) in words) != (slot in values) for slot in slots)


def delexicalised(example: Example, slots: Sequence[str]) -> Example:
    """An example with its source's values of `slots` replaced in the source and the sentence."""
    values = open_values(example.source, slots)
    return Example(delexicalise(example.tokens, values), example.slots, delexicalise(example.source, values))
