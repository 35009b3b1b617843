"""Success metrics of controllable generation, as Diffusion-LM scores them (Li et al. 2022, §7;
control_gen/eval_control.py).

Pure functions on token lists, tag lists and trees; the parse of the generated sentence
(the bundled grammar's exact parser, or spaCy on real text) is the caller's. `None` stands
for "no parse" (an ungrammatical sentence) and scores 0.

    POS         word-level accuracy of the output's tags against the target, the output
                truncated or padded to the target's length
    Tree        labelled bracket F1 (EVALB-style) of the output's tree against the target
    Span        1 if the output's tree has the exact (i, j, label) constituent, else 0
    Attribute   1 if the value is expressed: the parser's slot, or (real text) a substring
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from difflm.text.grammar.tree import Tree

#: Start-symbol wrappers left out of the brackets, as EVALB's `DELETE_LABEL TOP`: they span
#: every sentence, so counting them would only inflate F1 (and a target written without
#: ROOT would miss one bracket).
ROOT_LABELS = frozenset({"ROOT", "TOP"})


def pos_accuracy(predicted: Sequence[str] | None, target: Sequence[str]) -> float:
    """Share of target positions whose predicted tag is right.

    Args:
        predicted: the output's tags (one per generated word), None if it has no tags.
        target: the wanted tags.

    Returns:
        Matches over len(target): extra predicted tags are cut off, missing ones count wrong.

    Raises:
        ValueError: an empty target.
    """
    if not target:
        raise ValueError("an empty POS target has no accuracy")
    if predicted is None:
        return 0.0
    return sum(p == g for p, g in zip(predicted, target)) / len(target)


def brackets(tree: Tree) -> Counter[tuple[int, int, str]]:
    """The labelled constituents (i, j, label) of a tree as a multiset, preterminals and ROOT_LABELS left out.

    A multiset because a unary chain (NP over NP) is two brackets of the same span and label.
    """
    return Counter(span for span in tree.spans() if span[2] not in ROOT_LABELS)


def bracket_f1(predicted: Tree | None, target: Tree) -> float:
    """Labelled bracket F1 = 2PR / (P + R) of `predicted` against `target` (0 with no parse).

    P and R count the matched brackets (multiset intersection) over each tree's brackets. Two
    trees without brackets (one-word sentences) score 1 when their leaves number the same.
    """
    if predicted is None:
        return 0.0
    guess, gold = brackets(predicted), brackets(target)
    if not guess and not gold:
        return float(len(predicted.leaves()) == len(target.leaves()))
    matched = sum((guess & gold).values())
    return 2 * matched / (sum(guess.values()) + sum(gold.values()))


def same_tree(predicted: Tree | None, target: Tree) -> bool:
    """Exact match: the same number of words and the same labelled brackets."""
    return (
        predicted is not None
        and len(predicted.leaves()) == len(target.leaves())
        and brackets(predicted) == brackets(target)
    )


def span_match(predicted: Tree | None, i: int, j: int, label: str) -> float:
    """1.0 if the words i..j−1 form a `label` constituent of `predicted` (any node of a unary chain), else 0.0."""
    return float(predicted is not None and (i, j, label) in predicted.spans())


def slot_match(slots: Mapping[str, str] | None, slot: str, value: str) -> float:
    """1.0 if the parser's slots hold slot = value, else 0.0."""
    return float(slots is not None and slots.get(slot) == value)


def substring_match(words: Sequence[str], value: str) -> float:
    """1.0 if `value` is a substring of the space-joined sentence (the paper's semantic-content check), else 0.0."""
    return float(value in " ".join(words))
