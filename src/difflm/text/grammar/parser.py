"""Exact, vectorised CKY parsing of a PCFG: inside log-probabilities and Viterbi trees.

Notation (a chart cell is the span of ``l`` words starting at word ``i``):

    β(A, i, l)   inside probability: Σ over the derivations of the span from symbol A
    δ(A, i, l)   Viterbi log-probability: log max over those derivations
    U*(A, B)     unary closure: Σ over the unary chains A ⇒* B (the empty chain when A = B)
    k            split point: the left child covers k words, the right one l − k

The grammar is compiled into Chomsky normal form without changing any derivation's
probability:

    * each tagged word becomes a preterminal symbol, matched with probability 1;
    * ``A -> X1 X2 ... Xn`` (n ≥ 3) becomes ``A -> X1 @[X2..Xn]``, ``@[X2..Xn] -> X2 @[X3..Xn]``, ...
      where each ``@`` symbol has one rule, of probability 1 (equal suffixes share them);
    * unary rules stay and are applied in closed form after a cell's binary step:
      β(A) ← Σ_B U*(A, B) β(B), and δ(A) ← max_B (best chain A ⇒* B) + δ(B).

One span length ``l`` is one vectorised step over a batch of equal-length sentences, with
cells stored symbol-major, ``[symbols that can span l words, start i, sentence]``:

    1. for each split k, gather the left and right children of the binary rules usable at
       (l, k) for all starts and sentences at once (``index_select`` of whole symbol rows);
    2. combine and reduce into the parent rows: ``index_add_`` of probability products for β,
       ``scatter_reduce`` max (plus argmax backpointers) of log-prob sums for δ;
    3. apply the unary closure the same way, over the (A, B) pairs of U*.

β is kept in probability space, exp-free: each cell stores values scaled to a maximum of 1
and one log scale factor, so no entry needs an exp or log (and none underflows). The rules
usable at (l, k) are found once from the grammar alone, by a CKY over lengths: which
symbols can span exactly l words.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from difflm.text.grammar.pcfg import Derivation, Terminal

if TYPE_CHECKING:
    from difflm.text.grammar.pcfg import Grammar

NEG_INF = -math.inf
F64 = torch.float64


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


@dataclass
class _Split:
    """The binary rules usable at one split ``k`` of a span length ``l`` (indices are local ids).

    Attributes:
        k: length of the left child.
        left, right, parent: [R] children (lengths k and l − k) and parent (length l).
        prob: [R, 1, 1] rule probabilities.
        start: offset of these rules among the binary entries of the level.
    """

    k: int
    left: torch.Tensor
    right: torch.Tensor
    parent: torch.Tensor
    prob: torch.Tensor
    start: int


@dataclass
class _Level:
    """What filling the cells of one span length ``l`` needs.

    Attributes:
        symbols: global ids of the symbols that can span ``l`` words; chart rows of this
            length store them in this order (their "local" ids).
        local: global id -> local id, −1 for the symbols that cannot span ``l`` words.
        splits: the usable splits, in the order of the binary entries.
        parent, logp: per binary entry: local parent id [E], log-probability [E, 1, 1].
        entry_split, entry_rule: per binary entry: k and the index of the CNF binary rule.
        closed: local ids of the symbols that top a unary chain here (the U* pairs' parents), [Q].
        closed_pos: local id -> position in ``closed``, −1 if absent.
        pair_child, pair_parent: local ids of the U* pairs (A ≠ B, B able to span l words), [P].
        pair_prob, pair_logp: U*(A, B), and the log-prob of the best chain A ⇒+ B, [P, 1, 1].
        pair_bottom: global id of each pair's B.
        closure_slot: [Q + P] target position in ``closed`` of the Viterbi closure entries
            (the Q identity entries first, then the pairs).
        diagonal: U*(A, A) per symbol, [size, 1, 1]; None when no symbol has a unary cycle.
    """

    symbols: np.ndarray
    local: np.ndarray
    splits: list[_Split]
    parent: torch.Tensor
    logp: torch.Tensor
    entry_split: list[int]
    entry_rule: list[int]
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

    @property
    def cost(self) -> int:
        """Scores held per cell of this length (to size batches)."""
        return len(self.entry_rule) + len(self.closure_slot) + self.size


class ChartParser:
    """Inside and Viterbi CKY for a :class:`Grammar` (see the module docstring).

    Args:
        grammar: any ε-free PCFG (unary cycles and recursion included) is handled exactly.
        batch_scores: bound on the scores held at once for one span length (float64, 8 bytes
            each); it sets how many sentences are parsed together.
    """

    def __init__(self, grammar: Grammar, *, batch_scores: int = 1 << 21) -> None:
        self.grammar = grammar
        self.batch_scores = batch_scores
        self._compile_cnf()
        self._compile_closure()
        self._spans: list[np.ndarray] = []  # [l - 1]: mask of the symbols that can span l words
        self._levels: list[_Level] = []  # [l - 1]
        self._longest = 1  # the longest span length found possible so far
        self._compile_words()

    def parse(self, sentences: Sequence[Sequence[str]]) -> list[ParseResult]:
        """Parses each token sequence; see :class:`ParseResult`."""
        results = [_UNGRAMMATICAL] * len(sentences)
        by_length: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
        for n, tokens in enumerate(sentences):
            ids = [self._word_ids.get(w, -1) for w in tokens]
            # Unknown words and impossible lengths are decided without a chart.
            if ids and -1 not in ids and self._root_can_span(len(ids)):
                by_length[len(ids)].append((n, ids))
        for length, group in by_length.items():
            batch = max(1, self.batch_scores // self._cell_cost(length))
            for start in range(0, len(group), batch):
                chunk = group[start : start + batch]
                parsed = self._parse_batch(torch.tensor([ids for _, ids in chunk]))
                for (n, _), result in zip(chunk, parsed):
                    results[n] = result
        return results

    # ----------------------------------------------------------------- charts

    def _parse_batch(self, words: torch.Tensor) -> list[ParseResult]:
        """Parses equal-length sentences of word ids [b, L]: β for all, δ and trees where β > 0."""
        logprob = self._inside(words).tolist()
        found = [n for n, lp in enumerate(logprob) if lp > NEG_INF]
        results = [_UNGRAMMATICAL] * len(words)
        if not found:
            return results
        best, back = self._viterbi(words[found])
        for j, (n, viterbi_logprob) in enumerate(zip(found, best.tolist())):
            derivation = self._closed(back, j, words.shape[1], 0, self._root)
            sentence, _ = self.grammar.render(derivation)  # type: ignore[arg-type]
            results[n] = ParseResult(
                True, sentence.tree, logprob[n], viterbi_logprob, sentence.pos, dict(sentence.slots)
            )
        return results

    def _inside(self, words: torch.Tensor) -> torch.Tensor:
        """log β(root, 0, L) of equal-length sentences ``words`` [b, L]; −inf if ungrammatical."""
        b, length = words.shape
        # m[l - 1]: [size, n, b] cells scaled to a maximum of 1 (or all 0); s[l - 1]: [n, b] log scales.
        m, s = [self._m1[:, words.T]], [self._s1[words.T]]
        for l in range(2, length + 1):
            level, n = self._levels[l - 1], length - l + 1
            cells = torch.zeros(level.size, n, b, dtype=F64)
            top = torch.zeros(n, b, dtype=F64)
            if level.splits:
                # Children of split k carry scale s_left + s_right; bring all k to a common one.
                scale = torch.stack([s[x.k - 1][:n] + s[l - x.k - 1][x.k : x.k + n] for x in level.splits])
                top = scale.amax(0).clamp_min(torch.finfo(F64).min)  # finite even if every split is empty
                for x, weight in zip(level.splits, (scale - top).exp()):
                    prod = m[x.k - 1][:, :n].index_select(0, x.left) * m[l - x.k - 1][:, x.k : x.k + n].index_select(0, x.right)
                    prod *= x.prob
                    prod *= weight
                    cells.index_add_(0, x.parent, prod)
            self._close_inside(cells, level)
            peak = cells.amax(0) if level.size else torch.zeros(n, b, dtype=F64)
            found = peak > 0
            m.append(cells / torch.where(found, peak, 1.0))
            s.append(torch.where(found, top + peak.log(), NEG_INF))
        root = self._levels[length - 1].local[self._root]
        return m[-1][root, 0].log() + s[-1][0]

    def _viterbi(self, words: torch.Tensor) -> tuple[torch.Tensor, list[tuple[np.ndarray, np.ndarray]]]:
        """δ(root, 0, L) of equal-length sentences ``words`` [b, L], and the backpointers.

        Returns:
            The scores [b] and, per span length l, (binary argmax [size, n, b] (empty for
            l = 1), closure argmax [Q, n, b]) as numpy arrays.
        """
        b, length = words.shape
        d = [self._d1[:, words.T]]  # d[l - 1]: [size, n, b] log-probabilities
        back = [(np.empty(0, dtype=np.int64), self._closure_arg1[:, words.T].numpy())]
        for l in range(2, length + 1):
            level, n = self._levels[l - 1], length - l + 1
            scores = torch.empty(len(level.entry_rule), n, b, dtype=F64)
            for x in level.splits:
                out = scores[x.start : x.start + len(x.left)]
                torch.add(d[x.k - 1][:, :n].index_select(0, x.left), d[l - x.k - 1][:, x.k : x.k + n].index_select(0, x.right), out=out)
            scores += level.logp
            cells, binary_arg = _argmax_into(scores, level.parent, level.size)
            closure_arg = self._close_viterbi(cells, level)
            d.append(cells)
            back.append((binary_arg.numpy(), closure_arg.numpy()))
        return d[-1][self._levels[length - 1].local[self._root], 0], back

    def _close_inside(self, cells: torch.Tensor, level: _Level) -> None:
        """β(A) ← Σ_B U*(A, B) β(B), in place, for cells [size, n, b] of one span length."""
        chained = cells.index_select(0, level.pair_child) * level.pair_prob
        if level.diagonal is not None:
            cells *= level.diagonal
        cells.index_add_(0, level.pair_parent, chained)

    def _close_viterbi(self, cells: torch.Tensor, level: _Level) -> torch.Tensor:
        """δ(A) ← max_B best(A ⇒* B) + δ(B), in place; returns the argmax [Q, n, b] over the
        closure entries (below Q: the empty chain; Q + p: pair p)."""
        entries = torch.cat([cells.index_select(0, level.closed), cells.index_select(0, level.pair_child) + level.pair_logp])
        best, arg = _argmax_into(entries, level.closure_slot, len(level.closed))
        cells.index_copy_(0, level.closed, best)
        return arg

    # ----------------------------------------------------------------- Viterbi trees

    def _closed(self, back: list, j: int, l: int, i: int, symbol: int) -> Derivation | Terminal:
        """Viterbi derivation of ``symbol`` over words [i, i + l) of sentence j, unary chain included."""
        level = self._levels[l - 1]
        bottom = symbol
        q = level.closed_pos[level.local[symbol]]
        if q >= 0:
            pair = back[l - 1][1][q, i, j] - len(level.closed)
            if pair >= 0:
                bottom = level.pair_bottom[pair]
        node = self._terminals[bottom] if l == 1 else self._binary(back, j, l, i, bottom)
        for rule in reversed(self._chain(symbol, bottom)):
            node = (rule, (node,))
        return node

    def _binary(self, back: list, j: int, l: int, i: int, symbol: int) -> Derivation:
        """Viterbi derivation of ``symbol`` over [i, i + l) whose top rule is binary."""
        level = self._levels[l - 1]
        entry = back[l - 1][0][level.local[symbol], i, j]
        k, rule = level.entry_split[entry], level.entry_rule[entry]
        left, right = self._b_left[rule], self._b_right[rule]
        children = [self._closed(back, j, k, i, left)]
        if self._is_intermediate[right]:  # the rest of the same original right-hand side
            children += self._binary(back, j, l - k, i + k, right)[1]
        else:
            children.append(self._closed(back, j, l - k, i + k, right))
        return self._b_origin[rule], tuple(children)

    def _chain(self, top: int, bottom: int) -> list[int]:
        """Original unary rules of the best chain top ⇒* bottom, top first."""
        chain = []
        while top != bottom:
            u = self._first_step[self._unary_pos[top], self._unary_pos[bottom]]
            chain.append(self._u_origin[u])
            top = self._u_child[u]
        return chain

    # ----------------------------------------------------------------- compilation

    def _compile_cnf(self) -> None:
        """Binary and unary rules over integer symbols (see the module docstring)."""
        index: dict[tuple, int] = {}

        def symbol(key: tuple) -> int:
            return index.setdefault(key, len(index))

        def item(x: str | Terminal) -> int:
            return symbol(("nt", x) if isinstance(x, str) else ("word", x))

        binary: list[tuple[int, int, int, float, int]] = []  # parent, left, right, log-prob, origin
        unary: list[tuple[int, int, float, int]] = []  # parent, child, log-prob, origin
        for origin, rule in enumerate(self.grammar.rules):
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

        self._n_symbols = len(index)
        self._root = index[("nt", self.grammar.start)]
        self._terminals: dict[int, Terminal] = {i: key[1] for key, i in index.items() if key[0] == "word"}
        self._is_intermediate = [key[0] == "@" for key in index]
        parent, left, right, logp, origin = zip(*binary) if binary else ((),) * 5
        self._b_parent = np.array(parent, dtype=np.int64)
        self._b_left, self._b_right = list(left), list(right)
        self._b_logp = np.array(logp, dtype=np.float64)
        self._b_origin: list[int] = list(origin)
        parent, child, logp, origin = zip(*unary) if unary else ((),) * 4
        self._u_parent, self._u_child = list(parent), list(child)
        self._u_logp = np.array(logp, dtype=np.float64)
        self._u_origin: list[int] = list(origin)

    def _compile_closure(self) -> None:
        """U* and the best unary chains, over the symbols that occur in unary rules.

        Sum: U* = (I − U)⁻¹ = I + U + U² + ..., exact for any ε-free PCFG (unary cycles
        included). Max: Floyd–Warshall in the (max, +) semiring, remembering each best
        chain's first rule so that the chain can be rebuilt.
        """
        involved = np.unique(np.array(self._u_parent + self._u_child, dtype=np.int64))
        self._unary_pos = {int(s): n for n, s in enumerate(involved)}
        m = len(involved)
        parent = np.array([self._unary_pos[s] for s in self._u_parent], dtype=np.int64)
        child = np.array([self._unary_pos[s] for s in self._u_child], dtype=np.int64)
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
        reach = best > NEG_INF
        a, z = np.nonzero(reach & ~np.eye(m, dtype=bool))
        # The (A, B) pairs with A ≠ B, as global ids; U*(A, A) = 1 unless A is on a unary cycle.
        self._c_parent, self._c_child = involved[a], involved[z]
        self._c_prob, self._c_logp = total[a, z], best[a, z]
        self._c_diagonal = np.ones(self._n_symbols)
        self._c_diagonal[involved] = np.diag(total)
        self._has_cycles = not np.allclose(self._c_diagonal, 1.0, rtol=0.0, atol=1e-15)

    def _compile_words(self) -> None:
        """Word ids, and each word's closed length-1 cell (β scaled, δ and its closure argmax)."""
        words = sorted({t.word for t in self._terminals.values()})
        self._word_ids = {w: n for n, w in enumerate(words)}
        level = self._level(1)
        # One cell per vocabulary word, laid out as a batch: [size, 1, V].
        init = torch.zeros(level.size, 1, len(words), dtype=F64)
        for s, terminal in self._terminals.items():
            init[level.local[s], 0, self._word_ids[terminal.word]] = 1.0
        cells = init.clone()
        self._close_inside(cells, level)
        peak = cells.amax(0)
        self._m1, self._s1 = (cells / peak)[:, 0], peak.log()[0]  # [size, V], [V]
        cells = init.log()
        self._closure_arg1 = self._close_viterbi(cells, level)[:, 0]  # [Q, V]
        self._d1 = cells[:, 0]  # [size, V]

    def _root_can_span(self, length: int) -> bool:
        # A span longer than 2m, m the longest possible one so far, needs a child longer than m
        # (the two lengths add up), so once 2m levels exist the longer lengths are impossible.
        while len(self._levels) < length:
            if len(self._levels) >= 2 * self._longest:
                return False
            self._level(len(self._levels) + 1)
        return bool(self._levels[length - 1].local[self._root] >= 0)

    def _level(self, l: int) -> _Level:
        """The tables of span length ``l``, built (with all shorter ones) on first use."""
        while len(self._levels) < l:
            self._levels.append(self._build_level(len(self._levels) + 1))
        return self._levels[l - 1]

    def _build_level(self, l: int) -> _Level:
        # 1. The binary rules that can build a span of l words, per split k, and the symbols
        #    that can span it.
        spans = np.zeros(self._n_symbols, bool)
        usable: list[tuple[int, np.ndarray]] = []
        if l == 1:
            spans[list(self._terminals)] = True
        for k in range(1, l):
            left_ok = self._spans[k - 1][self._b_left]
            rules = np.nonzero(left_ok & self._spans[l - k - 1][self._b_right])[0]
            if len(rules):
                usable.append((k, rules))
                spans[self._b_parent[rules]] = True
        # U* is transitive, so one step adds every symbol a unary chain reaches; the pairs kept
        # are those whose bottom symbol can get a value before the closure.
        pairs = np.nonzero(spans[self._c_child])[0]
        spans[self._c_parent[pairs]] = True
        self._spans.append(spans)
        if spans.any():
            self._longest = l
        symbols = np.nonzero(spans)[0]
        local = np.full(self._n_symbols, -1)
        local[symbols] = np.arange(len(symbols))

        # 2. The same in local ids.
        splits, start = [], 0
        for k, rules in usable:
            ids = [self._levels[k - 1].local[self._b_left], self._levels[l - k - 1].local[self._b_right], local[self._b_parent]]
            left, right, parent = (torch.from_numpy(x[rules]) for x in ids)
            prob = torch.from_numpy(np.exp(self._b_logp[rules]))[:, None, None]
            splits.append(_Split(k, left, right, parent, prob, start))
            start += len(rules)
        rules = np.concatenate([r for _, r in usable]) if usable else np.zeros(0, dtype=np.int64)
        closed = np.unique(local[self._c_parent[pairs]])
        closed_pos = np.full(len(symbols), -1)
        closed_pos[closed] = np.arange(len(closed))
        pair_parent = local[self._c_parent[pairs]]
        return _Level(
            symbols=symbols,
            local=local,
            splits=splits,
            parent=torch.from_numpy(local[self._b_parent[rules]]),
            logp=torch.from_numpy(self._b_logp[rules])[:, None, None],
            entry_split=[k for k, r in usable for _ in r],
            entry_rule=rules.tolist(),
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

    def _cell_cost(self, length: int) -> int:
        """Most scores a sentence of ``length`` words holds at once (over its span lengths)."""
        return max((length - l + 1) * self._level(l).cost for l in range(1, length + 1))


def _argmax_into(scores: torch.Tensor, parent: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max of the entries scores [E, n, b] per parent row, and which entry attains it.

    Returns:
        The maxima [size, n, b] (−inf for rows without entries) and the argmax entry index
        (the lowest on ties; E where the maximum is −inf).
    """
    index = parent[:, None, None].expand_as(scores)
    best = scores.new_full((size, *scores.shape[1:]), NEG_INF).scatter_reduce_(0, index, scores, "amax")
    hit = (scores == best.index_select(0, parent)) & (scores > NEG_INF)
    entries = torch.arange(len(scores))[:, None, None]
    arg = torch.full(best.shape, len(scores)).scatter_reduce_(0, index, torch.where(hit, entries, len(scores)), "amin")
    return best, arg
