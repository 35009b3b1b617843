"""Probabilistic context-free grammars with gold POS tags, trees and slot values.

Rule text format, one rule per line (``#`` starts a comment)::

    weight  LHS -> RHS1 RHS2 ...  {slot=value; slot=value}

* A RHS symbol that is the LHS of some rule is a nonterminal; any other symbol is a word,
  tagged by the lexicon or written as ``word/TAG`` (a UPOS tag).
* Nonterminal names give the tree labels: ``NP-venue`` is drawn as ``NP`` (the part before
  the first ``-``). A name starting with ``_`` is transparent: its children are spliced into
  its parent. Helper symbols (a/an agreement, slot values) thus keep Penn-style flat phrases.
* Weights are normalised per LHS into probabilities.
* ``{slot=value}`` annotates the rule: a derivation expresses the slots of the rules it uses.
  Because the annotation sits on a rule, meaning follows the derivation (``is not
  ADJP-friendly`` and ``is ADJP-friendly`` set familyFriendly to ``no`` and ``yes``), not
  string matching.

A derivation is a nested tuple ``(rule_index, children)`` whose children are derivations
or :class:`Terminal` words.
"""

from __future__ import annotations

import math
import random
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import NamedTuple, Union

from difflm.text.grammar.tree import Tree

UPOS_TAGS = frozenset("ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split())

_RULE = re.compile(r"(?P<weight>\S+)\s+(?P<lhs>\S+)\s+->\s+(?P<rhs>[^{]+?)\s*(?:\{(?P<slots>[^}]*)\})?")


class Terminal(NamedTuple):
    """A word with its gold POS tag; in trees it is the preterminal ``(tag word)``."""

    word: str
    tag: str


@dataclass(frozen=True)
class Rule:
    """``lhs -> rhs`` with probability ``prob`` and the slot values it expresses."""

    lhs: str
    rhs: tuple[str | Terminal, ...]
    prob: float
    slots: tuple[tuple[str, str], ...] = ()


Derivation = tuple[int, tuple[Union["Derivation", Terminal], ...]]


@dataclass(frozen=True)
class GrammarSentence:
    """A sentence with its gold annotations.

    Attributes:
        tokens: the words.
        pos: one UPOS tag per token.
        tree: the gold constituency tree as a bracketed string (:meth:`parse_tree` nests it).
        slots: slot -> value expressed by the derivation, e.g. {"food": "Italian"}.
        logprob: log-probability of the gold derivation under the grammar.
    """

    tokens: tuple[str, ...]
    pos: tuple[str, ...]
    tree: str
    slots: Mapping[str, str] = field(default_factory=dict, hash=False)  # a mapping is not hashable
    logprob: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def parse_tree(self) -> Tree:
        """The gold tree as a nested :class:`Tree`."""
        return Tree.from_string(self.tree)


class Grammar:
    """A PCFG over tagged words whose rules may carry slot values.

    Args:
        rules: the rules; their ``prob`` may be any positive weights, normalised per LHS.
        start: the start symbol.
        length_range: ``(min, max)`` tokens of sampled sentences; ``None`` for no bound.

    Raises:
        ValueError: an empty RHS, a non-positive weight, a duplicate rule, a tag outside
            UPOS, a missing start symbol or a nonterminal unreachable from it.
    """

    def __init__(
        self, rules: Iterable[Rule], *, start: str = "ROOT", length_range: tuple[int, int] | None = None
    ) -> None:
        rules = list(rules)
        totals: dict[str, float] = {}
        by_lhs: dict[str, list[int]] = {}  # rule indices per nonterminal, in the order of ``nonterminals``
        seen: set[tuple[str, tuple[str | Terminal, ...]]] = set()
        for i, rule in enumerate(rules):
            if not rule.rhs:
                raise ValueError(f"rule for {rule.lhs!r} has an empty right-hand side")
            if not rule.prob > 0:
                raise ValueError(f"rule {_show(rule)} has non-positive weight {rule.prob}")
            if (rule.lhs, rule.rhs) in seen:
                # Two rules with one RHS would be two derivations no tree can tell apart.
                raise ValueError(f"duplicate rule {_show(rule)}")
            seen.add((rule.lhs, rule.rhs))
            for x in rule.rhs:
                if isinstance(x, Terminal) and x.tag not in UPOS_TAGS:
                    raise ValueError(f"tag {x.tag!r} of word {x.word!r} is not a UPOS tag")
            totals[rule.lhs] = totals.get(rule.lhs, 0.0) + rule.prob
            by_lhs.setdefault(rule.lhs, []).append(i)
        self.rules: tuple[Rule, ...] = tuple(Rule(r.lhs, r.rhs, r.prob / totals[r.lhs], r.slots) for r in rules)
        self.start = start
        self.length_range = length_range
        self.nonterminals: tuple[str, ...] = tuple(totals)
        self._check_symbols(by_lhs)
        self._compile(by_lhs)

    @classmethod
    def from_text(
        cls,
        text: str,
        lexicon: Mapping[str, str] | None = None,
        *,
        start: str = "ROOT",
        length_range: tuple[int, int] | None = None,
    ) -> Grammar:
        """Builds a grammar from rule text (format in the module docstring).

        Args:
            text: the rules.
            lexicon: word -> UPOS tag for words written without ``/TAG``.
            start: the start symbol.
            length_range: see the class.

        Raises:
            ValueError: a malformed line, or a word with neither lexicon entry nor tag;
                the message gives the line.
        """
        lexicon = lexicon or {}
        parsed = []
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = _RULE.fullmatch(line)
            if m is None:
                expected = "'weight LHS -> RHS... {slot=value}'"
                raise ValueError(f"line {lineno}: expected {expected}, got {line!r}")
            try:
                weight = float(m["weight"])
                slots = tuple(_slot(item) for item in (m["slots"] or "").split(";") if item.strip())
            except ValueError as e:
                raise ValueError(f"line {lineno}: {e}") from None
            parsed.append((lineno, m["lhs"], m["rhs"].split(), weight, slots))
        lhs_names = {lhs for _, lhs, _, _, _ in parsed}
        rules = []
        for lineno, lhs, rhs, weight, slots in parsed:
            items: list[str | Terminal] = []
            for sym in rhs:
                word, _, tag = sym.rpartition("/") if "/" in sym else (sym, "", lexicon.get(sym))
                if sym in lhs_names:
                    items.append(sym)
                elif tag is None:
                    raise ValueError(f"line {lineno}: {sym!r} is neither a nonterminal nor a lexicon word")
                else:
                    items.append(Terminal(word, tag))
            rules.append(Rule(lhs, tuple(items), weight, slots))
        return cls(rules, start=start, length_range=length_range)

    # ----------------------------------------------------------------- properties

    @cached_property
    def words(self) -> frozenset[str]:
        """The terminal vocabulary."""
        return frozenset(x.word for r in self.rules for x in r.rhs if isinstance(x, Terminal))

    @cached_property
    def slot_values(self) -> dict[str, tuple[str, ...]]:
        """Slot -> the sorted values the grammar can express."""
        values: dict[str, set[str]] = {}
        for rule in self.rules:
            for slot, value in rule.slots:
                values.setdefault(slot, set()).add(value)
        return {slot: tuple(sorted(v)) for slot, v in sorted(values.items())}

    def label(self, nonterminal: str) -> str | None:
        """The tree label drawn for ``nonterminal``; ``None`` if it is transparent."""
        return None if nonterminal.startswith("_") else nonterminal.split("-", 1)[0]

    # ----------------------------------------------------------------- sampling

    def sample(self, n: int, seed: int) -> list[GrammarSentence]:
        """Draws ``n`` sentences, reproducibly from ``seed``.

        Derivations are drawn top-down from the PCFG and rejected when they express a slot
        twice (a CFG cannot forbid that without a nonterminal per set of used slots) or fall
        outside ``length_range``. ``logprob`` stays the unconditioned PCFG log-probability of
        the derivation, the quantity the parser's inside algorithm sums.

        Raises:
            RuntimeError: almost every draw is rejected (the constraints are unsatisfiable).
        """
        rng = random.Random(seed)
        out: list[GrammarSentence] = []
        budget = 1000 + 100 * n
        while len(out) < n:
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"rejected nearly all samples: check length_range={self.length_range}")
            sentence, repeated_slot = self.render(self._draw(self._start_id, rng))
            lo, hi = self.length_range or (0, math.inf)
            if not repeated_slot and lo <= len(sentence.tokens) <= hi:
                out.append(sentence)
        return out

    def _draw(self, symbol: int, rng: random.Random) -> Derivation:
        rule_ids, cumulative = self._choices[symbol]
        r = rule_ids[bisect_right(cumulative, rng.random())] if len(rule_ids) > 1 else rule_ids[0]
        return r, tuple(self._draw(x, rng) if isinstance(x, int) else x for x in self._rhs[r])

    # ----------------------------------------------------------------- derivations

    def render(self, derivation: Derivation) -> tuple[GrammarSentence, bool]:
        """The sentence a derivation yields, with its gold tree, tags, slots and log-prob.

        Returns:
            The sentence and whether some slot was expressed more than once (the first value
            is kept).
        """
        tokens: list[str] = []
        tags: list[str] = []
        parts: list[str] = []  # tree string pieces, joined by spaces
        slots: dict[str, str] = {}
        repeated = False
        logprob = 0.0

        def visit(node: Derivation) -> None:
            nonlocal repeated, logprob
            r, children = node
            logprob += self._logp[r]
            for slot, value in self.rules[r].slots:
                repeated |= slot in slots
                slots.setdefault(slot, value)
            label = self._labels[r]
            if label:
                parts.append("(" + label)
            for child in children:
                if type(child) is Terminal:
                    tokens.append(child.word)
                    tags.append(child.tag)
                    parts.append(f"({child.tag} {child.word})")
                else:
                    visit(child)  # type: ignore[arg-type]
            if label:
                parts[-1] += ")"

        visit(derivation)
        tree = " ".join(parts)
        return GrammarSentence(tuple(tokens), tuple(tags), tree, MappingProxyType(slots), logprob), repeated

    # ----------------------------------------------------------------- internals

    def _check_symbols(self, by_lhs: dict[str, list[int]]) -> None:
        if self.start not in self.nonterminals:
            raise ValueError(f"start symbol {self.start!r} has no rules")
        reached, todo = {self.start}, [self.start]
        while todo:
            for rule in (self.rules[i] for i in by_lhs[todo.pop()]):
                for x in rule.rhs:
                    if isinstance(x, str) and x not in reached:
                        if x not in by_lhs:
                            raise ValueError(f"nonterminal {x!r} (in {_show(rule)}) has no rules")
                        reached.add(x)
                        todo.append(x)
        unreachable = set(self.nonterminals) - reached
        if unreachable:
            raise ValueError(f"nonterminals unreachable from {self.start!r}: {sorted(unreachable)}")

    def _compile(self, by_lhs: dict[str, list[int]]) -> None:
        """Integer tables for the sampler and the renderer (they run millions of times)."""
        ids = {name: i for i, name in enumerate(self.nonterminals)}
        self._start_id = ids[self.start]
        self._rhs = [tuple(ids[x] if isinstance(x, str) else x for x in r.rhs) for r in self.rules]
        self._logp = [math.log(r.prob) for r in self.rules]
        self._labels = [self.label(r.lhs) for r in self.rules]
        self._choices = []
        for rule_ids in by_lhs.values():
            cumulative, total = [], 0.0
            for i in rule_ids:
                total += self.rules[i].prob
                cumulative.append(total)
            # bisect_right over the first n-1 bounds picks rule k with probability prob_k;
            # leaving out the last bound makes a total of 0.9999999 harmless.
            self._choices.append((rule_ids, cumulative[:-1]))


def _slot(item: str) -> tuple[str, str]:
    name, eq, value = item.partition("=")
    if not eq or not name.strip() or not value.strip():
        raise ValueError(f"slot annotation {item.strip()!r} is not 'slot=value'")
    return name.strip(), value.strip()


def _show(rule: Rule) -> str:
    rhs = " ".join(x if isinstance(x, str) else f"{x.word}/{x.tag}" for x in rule.rhs)
    return f"'{rule.lhs} -> {rhs}'"
