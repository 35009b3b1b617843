"""Exact, vectorised CKY parsing of a PCFG: inside log-probabilities and Viterbi trees.

Notation (a chart cell is the span of ``l`` words starting at word ``i``):

    β(A, i, l)   inside probability: Σ over the derivations of the span from symbol A
    δ(A, i, l)   Viterbi log-probability: log max over those derivations
    U*(A, B)     unary closure: Σ over the unary chains A ⇒* B (:mod:`~difflm.text.grammar.cnf`)
    k            split point: the left child covers k words, the right one l − k

The grammar is used in Chomsky normal form (:class:`~difflm.text.grammar.cnf.CNF`), which
keeps every derivation's probability. Sentences of similar lengths are parsed together,
padded to the longest, L, with a word that matches nothing; each sentence's result is read
at its own length. The chart is one tensor ``[rows, batch]`` whose rows hold, span length
after span length, a block ``[symbols that can span l words, start i]``. Filling the block
of length l is one vectorised step:

    1. gather the left and right children of every usable (rule, split k, start i) at once:
       two ``index_select`` calls with row indices precomputed per L;
    2. combine (β: product times the rule probability; δ: sum plus the log-probability) and
       reduce into the parent rows (``index_add_``; for δ ``scatter_reduce`` max and argmax);
    3. apply the unary closure the same way over the (A, B) pairs of U*:
       β(A) ← Σ_B U*(A, B) β(B), and δ(A) ← max_B (best chain A ⇒* B) + δ(B).

β is computed in probability space, where the reductions need no exp or log. Each word's
cell is divided by its largest entry, so a span's values are β divided by the product of its
words' factors, which children and parent share: the factors cancel in every rule and are
added back, in log space, at the root. This stays within float64 unless a span's probability
falls 10^300 below the product of its words' best single-word probabilities, which needs
sentences hundreds of words long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from difflm.text.grammar.cnf import CNF, Layout, Level
from difflm.text.grammar.pcfg import Derivation, Terminal

if TYPE_CHECKING:
    from difflm.text.grammar.pcfg import Grammar

NEG_INF = -math.inf
F64 = torch.float64

Batch = list[tuple[int, list[int]]]  # (index in the input, word ids) per sentence


@dataclass(frozen=True)
class ParseResult:
    """The parser's verdict on one token sequence.

    Attributes:
        grammatical: some derivation of the grammar yields exactly these tokens.
        tree: the most probable (Viterbi) tree as a bracketed string; ``None`` if ungrammatical.
        logprob: log p(tokens), summed over all derivations (inside algorithm); −inf if
            ungrammatical.
        viterbi_logprob: log-probability of the Viterbi derivation; −inf if ungrammatical.
        pos: the POS tags of the Viterbi tree.
        slots: the slot values the Viterbi derivation expresses (the first value if one is
            expressed twice).
    """

    grammatical: bool
    tree: str | None
    logprob: float
    viterbi_logprob: float
    pos: tuple[str, ...] | None = None
    slots: dict[str, str] | None = None


_UNGRAMMATICAL = ParseResult(False, None, NEG_INF, NEG_INF)


class ChartParser:
    """Inside and Viterbi CKY for a :class:`Grammar` (see the module docstring).

    Args:
        grammar: any ε-free PCFG (recursion and unary cycles included) is handled exactly.
        batch_scores: bound on the scores held at once (float64, 8 bytes each); it caps how
            many sentences are parsed together.
        min_batch: sentences of neighbouring lengths are merged into one padded batch until
            it has this many: fewer, larger tensor operations.
        num_threads: torch intra-op threads while parsing (the previous setting is restored
            after each call; it is process-wide meanwhile). The chart's operations are too
            small to gain much from threads, and on a busy machine every extra thread stalls
            them at each barrier (10× slower here with 2 threads on 2 shared cores). None
            leaves torch's setting alone.
    """

    def __init__(
        self, grammar: Grammar, *, batch_scores: int = 1 << 22, min_batch: int = 256, num_threads: int | None = 1
    ) -> None:
        self.grammar = grammar
        self.batch_scores = batch_scores
        self.min_batch = min_batch
        self.num_threads = num_threads
        self._cnf = CNF(grammar)
        self._word_cells()

    def parse(self, sentences: Sequence[Sequence[str]]) -> list[ParseResult]:
        """Parses each token sequence; see :class:`ParseResult`."""
        if self.num_threads is None:
            return self._parse(sentences)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            return self._parse(sentences)
        finally:
            torch.set_num_threads(previous)

    def _parse(self, sentences: Sequence[Sequence[str]]) -> list[ParseResult]:
        results = [_UNGRAMMATICAL] * len(sentences)
        todo: Batch = []
        for n, tokens in enumerate(sentences):
            ids = [self._cnf.word_ids.get(w, -1) for w in tokens]
            # Unknown words and impossible lengths are decided without a chart.
            if ids and -1 not in ids and self._cnf.root_can_span(len(ids)):
                todo.append((n, ids))
        todo.sort(key=lambda item: len(item[1]))
        for batch in self._batches(todo):
            words = torch.full((len(batch), len(batch[-1][1])), len(self._cnf.word_ids))  # padded
            for j, (_, ids) in enumerate(batch):
                words[j, : len(ids)] = torch.tensor(ids)
            parsed = self._parse_batch(words, torch.tensor([len(ids) for _, ids in batch]))
            for (n, _), result in zip(batch, parsed):
                results[n] = result
        return results

    def _batches(self, todo: Batch) -> list[Batch]:
        """Cuts length-sorted sentences into batches of at least ``min_batch`` (merging
        neighbouring lengths), fewer only where the memory bound says so."""
        batches = []
        start = 0
        while start < len(todo):
            end = start + 1
            while end < len(todo):
                length = len(todo[end][1])
                full = end - start >= max(1, self.batch_scores // self._cnf.layout(length).peak)
                if full or (end - start >= self.min_batch and length > len(todo[end - 1][1])):
                    break
                end += 1
            batches.append(todo[start:end])
            start = end
        return batches

    # ----------------------------------------------------------------- charts

    def _parse_batch(self, words: torch.Tensor, lengths: torch.Tensor) -> list[ParseResult]:
        """Parses padded sentences of word ids [b, L] with their lengths [b]: β for all,
        δ and trees where β > 0."""
        logprob = self._inside(words, lengths).tolist()
        found = [n for n, lp in enumerate(logprob) if lp > NEG_INF]
        results = [_UNGRAMMATICAL] * len(words)
        if not found:
            return results
        best, back = self._viterbi(words[found], lengths[found])
        for j, (n, viterbi_logprob) in enumerate(zip(found, best.tolist())):
            derivation = self._closed(back, j, int(lengths[n]), 0, self._cnf.root)
            sentence, _ = self.grammar.render(derivation)  # type: ignore[arg-type]
            results[n] = ParseResult(
                True, sentence.tree, logprob[n], viterbi_logprob, sentence.pos, dict(sentence.slots)
            )
        return results

    def _inside(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log β(root, 0, length) of padded sentences ``words`` [b, L]; −inf if ungrammatical."""
        b, length = words.shape
        layout = self._cnf.layout(length)
        chart = torch.zeros(layout.rows, b, dtype=F64)  # β divided by the words' factors
        self._block(chart, layout, 1).copy_(self._m1[:, words.T])
        for l in range(2, length + 1):
            level, n, cells = self._cnf.level(l), length - l + 1, self._block(chart, layout, l)
            left = chart.index_select(0, layout.left_rows[l - 1])
            right = chart.index_select(0, layout.right_rows[l - 1])
            cells.index_add_(0, level.parent, (left * right).view(-1, n, b) * level.prob)
            _close_inside(cells, level)
        return self._root_cells(chart, layout, lengths).log() + self._s1[words].sum(1)

    def _viterbi(self, words: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list]:
        """δ(root, 0, length) of padded sentences ``words`` [b, L], and the backpointers.

        Returns:
            The scores [b] and, per span length l, the binary argmax [size, n, b] (empty for
            l = 1) and the closure argmax [Q, n, b], as numpy arrays.
        """
        b, length = words.shape
        layout = self._cnf.layout(length)
        chart = torch.full((layout.rows, b), NEG_INF, dtype=F64)
        self._block(chart, layout, 1).copy_(self._d1[:, words.T])
        back = [(np.empty(0, dtype=np.int64), self._closure_arg1[:, words.T].numpy())]
        for l in range(2, length + 1):
            level, n, cells = self._cnf.level(l), length - l + 1, self._block(chart, layout, l)
            left = chart.index_select(0, layout.left_rows[l - 1])
            right = chart.index_select(0, layout.right_rows[l - 1])
            binary_arg = _argmax_into(cells, (left + right).view(-1, n, b) + level.logp, level.parent)
            closure_arg = _close_viterbi(cells, level)
            back.append((binary_arg.numpy(), closure_arg.numpy()))
        return self._root_cells(chart, layout, lengths), back

    def _block(self, chart: torch.Tensor, layout: Layout, l: int) -> torch.Tensor:
        """The cells of span length l: a view [size, n, b] of the flat chart [rows, b]."""
        size, n = self._cnf.level(l).size, len(layout.offsets) - l + 1
        return chart[layout.offsets[l - 1] : layout.offsets[l - 1] + size * n].view(size, n, -1)

    def _root_cells(self, chart: torch.Tensor, layout: Layout, lengths: torch.Tensor) -> torch.Tensor:
        """The start symbol's cell over each whole sentence, [b]."""
        root = torch.tensor([self._cnf.level(x).local[self._cnf.root] for x in lengths.tolist()])
        rows = torch.tensor(layout.offsets)[lengths - 1] + root * (len(layout.offsets) - lengths + 1)
        return chart[rows, torch.arange(len(lengths))]

    def _word_cells(self) -> None:
        """Each word's closed length-1 cell: β divided by its peak (``_m1``, log factor ``_s1``),
        δ (``_d1``) and the closure argmax; the extra last column is the padding word."""
        level = self._cnf.level(1)
        init = torch.zeros(level.size, 1, len(self._cnf.word_ids) + 1, dtype=F64)  # the vocabulary as a batch
        for s, terminal in self._cnf.terminals.items():
            init[level.local[s], 0, self._cnf.word_ids[terminal.word]] = 1.0
        cells = init.clone()
        _close_inside(cells, level)
        peak = cells.amax(0).clamp_min(1.0)  # 1 for the padding word, whose cell stays 0
        self._m1, self._s1 = (cells / peak)[:, 0], peak.log()[0]  # [size, V + 1], [V + 1]
        cells = init.log()
        self._closure_arg1 = _close_viterbi(cells, level)[:, 0]  # [Q, V + 1]
        self._d1 = cells[:, 0]  # [size, V + 1]

    # ----------------------------------------------------------------- Viterbi trees

    def _closed(self, back: list, j: int, l: int, i: int, symbol: int) -> Derivation | Terminal:
        """Viterbi derivation of ``symbol`` over words [i, i + l) of sentence j, unary chain included."""
        level = self._cnf.level(l)
        bottom = symbol
        q = level.closed_pos[level.local[symbol]]
        if q >= 0:
            pair = back[l - 1][1][q, i, j] - len(level.closed)
            if pair >= 0:
                bottom = level.pair_bottom[pair]
        node = self._cnf.terminals[bottom] if l == 1 else self._binary(back, j, l, i, bottom)
        for rule in reversed(self._cnf.chain(symbol, bottom)):
            node = (rule, (node,))
        return node

    def _binary(self, back: list, j: int, l: int, i: int, symbol: int) -> Derivation:
        """Viterbi derivation of ``symbol`` over [i, i + l) whose top rule is binary."""
        cnf, level = self._cnf, self._cnf.level(l)
        entry = back[l - 1][0][level.local[symbol], i, j]
        k, rule = int(level.entry_split[entry]), level.entry_rule[entry]
        left, right = cnf.b_left[rule], cnf.b_right[rule]
        children = [self._closed(back, j, k, i, left)]
        if cnf.is_intermediate[right]:  # the rest of the same original right-hand side
            children += self._binary(back, j, l - k, i + k, right)[1]
        else:
            children.append(self._closed(back, j, l - k, i + k, right))
        return cnf.b_origin[rule], tuple(children)


def _close_inside(cells: torch.Tensor, level: Level) -> None:
    """β(A) ← Σ_B U*(A, B) β(B), in place, for the cells [size, n, b] of one span length."""
    chained = cells.index_select(0, level.pair_child) * level.pair_prob
    if level.diagonal is not None:
        cells *= level.diagonal
    cells.index_add_(0, level.pair_parent, chained)


def _close_viterbi(cells: torch.Tensor, level: Level) -> torch.Tensor:
    """δ(A) ← max_B best(A ⇒* B) + δ(B), in place, for the cells [size, n, b] of one span length.

    Returns:
        The argmax [Q, n, b] over the closure entries: below Q the empty chain, Q + p pair p.
    """
    chained = cells.index_select(0, level.pair_child) + level.pair_logp
    entries = torch.cat([cells.index_select(0, level.closed), chained])
    best = torch.full((len(level.closed), *cells.shape[1:]), NEG_INF, dtype=F64)
    arg = _argmax_into(best, entries, level.closure_slot)
    cells.index_copy_(0, level.closed, best)
    return arg


def _argmax_into(out: torch.Tensor, scores: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """out[p] ← max(out[p], max of the entries scores[e] with parent[e] = p), in place.

    Args:
        out: [size, n, b], −inf where nothing is known yet.
        scores: [E, n, b] entries.
        parent: [E] row of ``out`` each entry reduces into.

    Returns:
        The argmax entry per element of ``out`` (the lowest on ties; arbitrary where ``out``
        stays −inf, which no Viterbi tree visits).
    """
    index = parent[:, None, None].expand_as(scores)
    out.scatter_reduce_(0, index, scores, "amax")
    hit = scores == out.index_select(0, parent)  # where out stays −inf any entry will do
    entries = torch.arange(len(scores))[:, None, None]
    arg = torch.full(out.shape, len(scores))
    return arg.scatter_reduce_(0, index, torch.where(hit, entries, len(scores)), "amin")
