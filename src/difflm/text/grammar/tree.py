"""Constituency trees: the nested form of the bracketed strings the grammar writes.

A tree string looks like ``(ROOT (S (NP (DET The) (PROPN Eagle)) (VP (AUX is) ...) (PUNCT .)))``:
a preterminal is ``(TAG word)``, so the leaves are the tokens and the preterminal labels
are their POS tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


@dataclass(frozen=True)
class Tree:
    """A constituency tree node.

    Attributes:
        label: phrase label (``NP``) or, for a preterminal, the POS tag (``PROPN``).
        children: subtrees; a preterminal has exactly one child, its word.
    """

    label: str
    children: tuple[Tree | str, ...]

    @classmethod
    def from_string(cls, text: str) -> Tree:
        """Parses a bracketed tree string.

        Raises:
            ValueError: unbalanced brackets, a node without a label or children, a word
                that is not the only child of its preterminal, or trailing text.
        """
        tokens = _TOKEN.findall(text)
        tree, end = _read(tokens, 0, text)
        if end != len(tokens):
            raise ValueError(f"trailing text after the tree in {text!r}")
        return tree

    def __str__(self) -> str:
        return f"({self.label} {' '.join(str(c) for c in self.children)})"

    @property
    def is_preterminal(self) -> bool:
        return len(self.children) == 1 and isinstance(self.children[0], str)

    def leaves(self) -> list[str]:
        """The words, left to right."""
        return [t.children[0] for t in self._preterminals()]  # type: ignore[misc]

    def pos(self) -> list[str]:
        """The preterminal labels (POS tags), one per word."""
        return [t.label for t in self._preterminals()]

    def _preterminals(self) -> list[Tree]:
        if self.is_preterminal:
            return [self]
        return [t for c in self.children for t in c._preterminals()]  # type: ignore[union-attr]

    def spans(self) -> list[tuple[int, int, str]]:
        """Labelled constituents as ``(start, end, label)`` word spans, end exclusive.

        Preterminals are left out (they are the POS tags); the order is pre-order, so the
        root comes first.
        """
        out: list[tuple[int, int, str]] = []
        self._spans(0, out)
        return out

    def _spans(self, start: int, out: list[tuple[int, int, str]]) -> int:
        if self.is_preterminal:
            return start + 1
        slot = len(out)
        out.append((start, start, self.label))  # placeholder: the end is known after the children
        end = start
        for child in self.children:
            end = child._spans(end, out)  # type: ignore[union-attr]
        out[slot] = (start, end, self.label)
        return end


def _read(tokens: list[str], i: int, text: str) -> tuple[Tree, int]:
    """Reads the node starting at ``tokens[i]`` (an opening bracket); returns it and the next index."""
    if i + 1 >= len(tokens) or tokens[i] != "(" or tokens[i + 1] in "()":
        raise ValueError(f"expected '(LABEL' at token {i} of {text!r}")
    label, i = tokens[i + 1], i + 2
    children: list[Tree | str] = []
    while i < len(tokens) and tokens[i] != ")":
        if tokens[i] == "(":
            child, i = _read(tokens, i, text)
            children.append(child)
        else:
            children.append(tokens[i])
            i += 1
    if i == len(tokens) or not children:
        raise ValueError(f"unbalanced or empty node {label!r} in {text!r}")
    if len(children) > 1 and any(isinstance(c, str) for c in children):
        raise ValueError(f"node {label!r} mixes words and subtrees in {text!r}: each word needs a (TAG word)")
    return Tree(label, tuple(children)), i + 1
