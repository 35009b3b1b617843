"""A PCFG compiled for CKY: Chomsky normal form, unary closure, and per-length tables.

The compilation keeps every derivation's probability:

    * each tagged word becomes a preterminal symbol, matched with probability 1;
    * ``A -> X1 X2 ... Xn`` (n ≥ 3) becomes ``A -> X1 @[X2..Xn]``, ``@[X2..Xn] -> X2 @[X3..Xn]``, ...
      where each ``@`` symbol has one rule, of probability 1 (equal suffixes share them);
    * unary rules stay, to be applied in closed form after a cell's binary step, through
      U*(A, B) = Σ over the unary chains A ⇒* B (the empty chain when A = B).

The parser fills a chart one span length l at a time, so the tables here are per l: which
symbols can span exactly l words and which binary rules can split l as k + (l − k), found
once from the grammar alone by a CKY over lengths. Their indices are "local": a symbol's
position among the symbols of its span length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from difflm.text.grammar.pcfg import Terminal

if TYPE_CHECKING:
    from difflm.text.grammar.pcfg import Grammar

NEG_INF = -math.inf


@dataclass
class Level:
    """The tables of one span length ``l`` (independent of the sentence length).

    Attributes:
        symbols: global ids of the symbols that can span ``l`` words, in local-id order.
        local: global id -> local id, −1 for the symbols that cannot span ``l`` words.
        entry_split, entry_left, entry_right: per binary entry (a CNF rule usable with a given
            split): k, and the local ids of its children in the levels k and l − k.
        entry_rule: per binary entry, the index of the CNF binary rule.
        parent, prob, logp: per binary entry: local parent id [E], probability and
            log-probability [E, 1, 1].
        closed: local ids of the symbols that top a unary chain here (parents of U* pairs), [Q].
        closed_pos: local id -> position in ``closed``, −1 if absent.
        pair_child, pair_parent: local ids of the U* pairs (A ≠ B, B able to span l words), [P].
        pair_prob, pair_logp: U*(A, B) and the log-prob of the best chain A ⇒+ B, [P, 1, 1].
        pair_bottom: global id of each pair's B.
        closure_slot: [Q + P] position in ``closed`` each Viterbi closure entry reduces into:
            the Q empty chains first, then the pairs.
        diagonal: U*(A, A) per symbol, [size, 1, 1]; None when no unary cycle exists.
    """

    symbols: np.ndarray
    local: np.ndarray
    entry_split: np.ndarray
    entry_left: np.ndarray
    entry_right: np.ndarray
    entry_rule: list[int]
    parent: torch.Tensor
    prob: torch.Tensor
    logp: torch.Tensor
    closed: torch.Tensor
    closed_pos: np.ndarray
    pair_child: torch.Tensor
    pair_parent: torch.Tensor
    pair_prob: torch.Tensor
    pair_logp: torch.Tensor
    pair_bottom: list[int]
    closure_slot: torch.Tensor
    diagonal: torch.Tensor | None

    @property
    def size(self) -> int:
        return len(self.symbols)


@dataclass
class Layout:
    """Where each span length's block sits in the flat chart ``[rows, batch]`` of sentences
    padded to L words; the block of length l holds the cells [symbol, start], symbol-major.

    Attributes:
        offsets: [l - 1] -> first row of the block of span length l.
        rows: total number of rows.
        left_rows, right_rows: [l - 1] -> [E_l · (L − l + 1)] chart rows of the left and right
            child of each (binary entry, start), entry-major (empty for l = 1).
        peak: most scores held at once per sentence, to size batches.
    """

    offsets: list[int]
    rows: int
    left_rows: list[torch.Tensor]
    right_rows: list[torch.Tensor]
    peak: int


class CNF:
    """A grammar in Chomsky normal form with its unary closure and per-length tables.

    Attributes:
        root: global id of the start symbol.
        terminals: global id -> the tagged word of each preterminal symbol.
        is_intermediate: per global id, whether it is a binarisation (``@``) symbol.
        b_parent, b_left, b_right, b_origin: per CNF binary rule: its symbols and the index of
            the original rule (−1 for the rules of ``@`` symbols).
        u_child, u_origin: per unary rule: its child and original rule index.
        word_ids: word -> id; ``len(word_ids)`` is the id of a padding word matching nothing.
    """

    def __init__(self, grammar: Grammar) -> None:
        self._binarise(grammar)
        self._close_unary()
        self.word_ids = {w: n for n, w in enumerate(sorted({t.word for t in self.terminals.values()}))}
        self._spans: list[np.ndarray] = []  # [l - 1]: mask of the symbols that can span l words
        self._levels: list[Level] = []  # [l - 1]
        self._layouts: dict[int, Layout] = {}
        self._longest = 1  # the longest span length found possible so far

    def level(self, l: int) -> Level:
        """The tables of span length ``l``, built (with all shorter ones) on first use."""
        while len(self._levels) < l:
            self._levels.append(self._build_level(len(self._levels) + 1))
        return self._levels[l - 1]

    def root_can_span(self, length: int) -> bool:
        """Whether some sentence of ``length`` words can be derived at all."""
        # A span longer than 2m, m the longest possible one so far, needs a child longer than m
        # (the two lengths add up), so once 2m levels exist the longer lengths are impossible.
        while len(self._levels) < length:
            if len(self._levels) >= 2 * self._longest:
                return False
            self.level(len(self._levels) + 1)
        return bool(self._levels[length - 1].local[self.root] >= 0)

    def layout(self, length: int) -> Layout:
        """The flat chart layout of sentences of ``length`` words (cached)."""
        if length not in self._layouts:
            levels = [self.level(l) for l in range(1, length + 1)]
            starts = np.arange(length, 0, -1)  # [x - 1] -> number of starts n_x = L − x + 1
            ends = np.cumsum([lv.size * n for lv, n in zip(levels, starts)])
            offsets = np.concatenate([[0], ends[:-1]])  # [x - 1] -> first row of the block of length x
            left_rows, right_rows = [], []
            for l, level in enumerate(levels, start=1):
                # The cell (symbol c, start i) of span length x is row offsets[x-1] + c · n_x + i;
                # entry e at start i has its left child at (k, i), its right one at (l − k, i + k).
                k, i = level.entry_split[:, None], np.arange(starts[l - 1])[None, :]
                left = offsets[k - 1] + level.entry_left[:, None] * starts[k - 1] + i
                right = offsets[l - k - 1] + level.entry_right[:, None] * starts[l - k - 1] + i + k
                left_rows.append(torch.from_numpy(left.ravel()))
                right_rows.append(torch.from_numpy(right.ravel()))
            peak = max(int(ends[-1]), *(len(r) for r in left_rows))
            self._layouts[length] = Layout(offsets.tolist(), int(ends[-1]), left_rows, right_rows, peak)
        return self._layouts[length]

    def chain(self, top: int, bottom: int) -> list[int]:
        """Original unary rules of the best chain top ⇒* bottom, top first."""
        chain = []
        while top != bottom:
            u = self._first_step[self._unary_pos[top], self._unary_pos[bottom]]
            chain.append(self.u_origin[u])
            top = self.u_child[u]
        return chain

    # ----------------------------------------------------------------- compilation

    def _binarise(self, grammar: Grammar) -> None:
        index: dict[tuple, int] = {}

        def symbol(key: tuple) -> int:
            return index.setdefault(key, len(index))

        def item(x: str | Terminal) -> int:
            return symbol(("nt", x) if isinstance(x, str) else ("word", x))

        binary: list[tuple[int, int, int, float, int]] = []  # parent, left, right, log-prob, origin
        unary: list[tuple[int, int, float, int]] = []  # parent, child, log-prob, origin
        for origin, rule in enumerate(grammar.rules):
            parent, logp, items = item(rule.lhs), math.log(rule.prob), list(rule.rhs)
            if len(items) == 1:
                unary.append((parent, item(items[0]), logp, origin))
                continue
            while len(items) > 2:
                key = ("@", *items[1:])
                shared = key in index
                rest = symbol(key)
                binary.append((parent, item(items[0]), rest, logp, origin))
                if shared:  # this suffix's chain of @ rules exists already
                    break
                parent, logp, origin, items = rest, 0.0, -1, items[1:]
            else:  # no break: two items left
                binary.append((parent, item(items[0]), item(items[1]), logp, origin))

        self.n_symbols = len(index)
        self.root = index[("nt", grammar.start)]
        self.terminals: dict[int, Terminal] = {i: key[1] for key, i in index.items() if key[0] == "word"}
        self.is_intermediate = [key[0] == "@" for key in index]
        b_parent, b_left, b_right, b_logp, b_origin = zip(*binary) if binary else ((),) * 5
        self.b_parent, self.b_left, self.b_right = (np.array(x, int) for x in (b_parent, b_left, b_right))
        self._b_logp = np.array(b_logp, dtype=np.float64)
        self.b_origin: list[int] = list(b_origin)
        u_parent, u_child, u_logp, u_origin = zip(*unary) if unary else ((),) * 4
        self._u_parent, self.u_child = list(u_parent), list(u_child)
        self._u_logp = np.array(u_logp, dtype=np.float64)
        self.u_origin: list[int] = list(u_origin)

    def _close_unary(self) -> None:
        """U* and the best unary chains, over the symbols that occur in unary rules.

        Sum: U* = (I − U)⁻¹ = I + U + U² + ..., exact for any ε-free PCFG (unary cycles
        included). Max: Floyd–Warshall in the (max, +) semiring, remembering each best
        chain's first rule so that the chain can be rebuilt.
        """
        involved = np.unique(np.array(self._u_parent + self.u_child, dtype=np.int64))
        self._unary_pos = {int(s): n for n, s in enumerate(involved)}
        m = len(involved)
        parent = np.array([self._unary_pos[s] for s in self._u_parent], dtype=np.int64)
        child = np.array([self._unary_pos[s] for s in self.u_child], dtype=np.int64)
        prob = np.zeros((m, m))
        prob[parent, child] = np.exp(self._u_logp)  # (lhs, rhs) pairs are unique: Grammar forbids duplicates
        best = np.full((m, m), NEG_INF)
        best[parent, child] = self._u_logp
        np.fill_diagonal(best, 0.0)
        first = np.full((m, m), -1)
        first[parent, child] = np.arange(len(parent))
        for k in range(m):
            via = best[:, k : k + 1] + best[k : k + 1, :]
            better = via > best
            best = np.where(better, via, best)
            first = np.where(better, first[:, k : k + 1], first)
        self._first_step = first
        total = np.linalg.inv(np.eye(m) - prob)
        a, z = np.nonzero((best > NEG_INF) & ~np.eye(m, dtype=bool))
        # The (A, B) pairs with A ≠ B, as global ids; U*(A, A) = 1 unless A is on a unary cycle.
        self._c_parent, self._c_child = involved[a], involved[z]
        self._c_prob, self._c_logp = total[a, z], best[a, z]
        self._c_diagonal = np.ones(self.n_symbols)
        self._c_diagonal[involved] = np.diag(total)
        self._has_cycles = bool(np.any(np.diag(total) != 1.0))

    def _build_level(self, l: int) -> Level:
        # 1. The binary rules that can build a span of l words, per split k, and the symbols
        #    that can span it.
        spans = np.zeros(self.n_symbols, bool)
        splits, rules = [], []
        if l == 1:
            spans[list(self.terminals)] = True
        for k in range(1, l):
            usable = np.nonzero(self._spans[k - 1][self.b_left] & self._spans[l - k - 1][self.b_right])[0]
            splits.append(np.full(len(usable), k))
            rules.append(usable)
            spans[self.b_parent[usable]] = True
        # U* is transitive, so one step adds every symbol a unary chain reaches; the pairs kept
        # are those whose bottom symbol can get a value before the closure.
        pairs = np.nonzero(spans[self._c_child])[0]
        spans[self._c_parent[pairs]] = True
        self._spans.append(spans)
        if spans.any():
            self._longest = l
        symbols = np.nonzero(spans)[0]
        local = np.full(self.n_symbols, -1)
        local[symbols] = np.arange(len(symbols))

        # 2. The same in local ids.
        split = np.concatenate(splits) if splits else np.zeros(0, dtype=np.int64)
        rule = np.concatenate(rules) if rules else np.zeros(0, dtype=np.int64)
        left = np.array([self._levels[k - 1].local[c] for k, c in zip(split, self.b_left[rule])], int)
        right = np.array([self._levels[l - k - 1].local[c] for k, c in zip(split, self.b_right[rule])], int)
        pair_parent = local[self._c_parent[pairs]]
        closed = np.unique(pair_parent)
        closed_pos = np.full(len(symbols), -1)
        closed_pos[closed] = np.arange(len(closed))
        return Level(
            symbols=symbols,
            local=local,
            entry_split=split,
            entry_left=left,
            entry_right=right,
            entry_rule=rule.tolist(),
            parent=torch.from_numpy(local[self.b_parent[rule]]),
            prob=torch.from_numpy(np.exp(self._b_logp[rule]))[:, None, None],
            logp=torch.from_numpy(self._b_logp[rule])[:, None, None],
            closed=torch.from_numpy(closed),
            closed_pos=closed_pos,
            pair_child=torch.from_numpy(local[self._c_child[pairs]]),
            pair_parent=torch.from_numpy(pair_parent),
            pair_prob=torch.from_numpy(self._c_prob[pairs])[:, None, None],
            pair_logp=torch.from_numpy(self._c_logp[pairs])[:, None, None],
            pair_bottom=self._c_child[pairs].tolist(),
            closure_slot=torch.from_numpy(np.concatenate([np.arange(len(closed)), closed_pos[pair_parent]])),
            diagonal=torch.from_numpy(self._c_diagonal[symbols])[:, None, None] if self._has_cycles else None,
        )
