"""Delexicalisation for data-to-text (`data.delexicalise`): proper names become placeholders.

An E2E MR's `name` and `near` values are proper names from an open set: a test MR may name a
restaurant that the training split never shows (trained on the dev split, 36% of the test
split's references do), and a model can only write the words of its vocabulary. As in the
E2E challenge's baseline (TGen, Dušek and Jurčíček 2016) and most of its systems, each such
value is replaced in the source and in the sentence by a placeholder word (`X-name`,
`X-near`), so the model learns "X-name is near X-near", and the value is put back after
decoding (`relexicalise`). The sentence's occurrences of a value are found case-insensitively,
longest value first; a placeholder whose slot the MR lacks stays as it is written, so a
hallucinated slot shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from difflm.text.corpora import Example, mr_slots

#: The slots whose values are proper names, delexicalised.
OPEN_SLOTS = ("name", "near")

Values = Mapping[str, tuple[str, ...]]  # slot -> its value's tokens


def placeholder(slot: str) -> str:
    """The word that stands for a slot's value: TGen's spelling."""
    return f"X-{slot}"


def open_values(source: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The values of the open slots of a linearised MR source (none for any other text)."""
    slots = mr_slots(source)
    return {slot: tuple(slots[slot].split()) for slot in OPEN_SLOTS if slot in slots}


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


def delexicalised(example: Example) -> Example:
    """An example with its source's open values replaced in the source and the sentence."""
    values = open_values(example.source)
    return Example(delexicalise(example.tokens, values), example.slots, delexicalise(example.source, values))
