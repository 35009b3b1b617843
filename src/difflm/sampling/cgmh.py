"""CGMH (Miao et al. 2019): constrained generation by Metropolis–Hastings over sentences,
scored by an autoregressive LM.

A state is a sentence x = w_1 … w_n (START and END implied) with some positions protected:
the keywords, which no move replaces or deletes, so they hold in every sample. The chain's
stationary distribution is π(x) ∝ [p_LM(START x END)·exp(f(x))]^(1/T) over the sentences that
keep the protected words, where f(x) = Σ_c w_c·log p(c | x) scores soft constraints (attribute,
POS) with classifiers of the clean sentence (T = 1, no f: the LM's own distribution). Each
step picks one of three moves with probability 1/3 each (a move that cannot apply is
rejected):

    replace  an unprotected position i (1/R of them), w ~ q(w | x_<i)
    insert   a slot i ∈ 1 … n + 1 (1/(n + 1)), w ~ q(w | x_<i)
    delete   an unprotected position i (1/R)

where q(w | x_<i) is the LM's next-word distribution renormalised over words (no START, END,
PAD), and R the number of unprotected words. With a proposal model (`propose`: a masked
LM, such as a masked diffusion run, reading the row with the slot blanked) the proposals see
both sides instead, q(w | x with a blank at i): for replace and delete the blank replaces
x_i, for insert it is inserted at i, and a delete's reverse (insert into x' at i) blanks the
same row, so the ratios below hold with this q as they do with the LM's (the original CGMH
adds a backward LM for the same reason). Each move's reverse is the opposite move at the
same place, so the acceptance ratio A (accepted with probability min(1, A)) is

    replace  π(x')·q(x_i | x_<i) / (π(x)·q(w | x_<i))
    insert   π(x')·(1/R(x')) / (π(x)·(1/(n + 1))·q(w | x_<i))
    delete   π(x')·(1/n)·q(x_i | x_<i) / (π(x)·(1/R(x)))

(`log_acceptance`; tested against the toy LM's known π). With a fixed length only replace
moves are made (infilling: a fixed length whose given words are protected). Each step
evaluates the LM once on the proposals of all chains; the proposal distributions come from
the current state's evaluation, since x_<i is shared. Simulated annealing (`anneal`) lowers
T linearly over the steps to `ANNEAL_FLOOR`·T, so the chains settle towards π's modes
instead of sampling it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from difflm.model.autoregressive import counted_positions
from difflm.text.vocab import Vocab

LM = Callable[[torch.Tensor], torch.Tensor]  # rows [B, L] (START w… END PAD…) -> next-token logits [B, L, V]
Factor = Callable[[torch.Tensor], torch.Tensor]  # rows [B, L] -> f(x) = Σ_c w_c·log p(c | x) [B]
Propose = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # rows with a BLANK, its positions [B] -> logits [B, V]
#: The id a proposal model's rows hold at the position it proposes for (it puts its mask there).
BLANK = -1
MOVES = ("replace", "insert", "delete")
#: Where simulated annealing ends, as a share of the starting temperature.
ANNEAL_FLOOR = 0.05


def log_acceptance(
    move: str, log_pi_new: float, log_pi_old: float, log_q_forward: float, log_q_reverse: float, n: int, r_old: int
) -> float:
    """log A of a move from a state of n words, R = r_old of them unprotected (module docstring).
    log_q_forward is log q of the proposed word (insert, replace), log_q_reverse that of the
    word the reverse move would propose (delete, replace)."""
    if move == "replace":
        return log_pi_new - log_pi_old + log_q_reverse - log_q_forward
    if move == "insert":
        return log_pi_new - log_pi_old - math.log(r_old + 1) + math.log(n + 1) - log_q_forward
    if move == "delete":
        return log_pi_new - log_pi_old - math.log(n) + log_q_reverse + math.log(r_old)
    raise ValueError(f"unknown move {move!r}; valid: {', '.join(MOVES)}")


@dataclass
class Chain:
    """One chain's sentence (word ids) and which of its positions are protected."""

    words: list[int]
    protected: list[bool]


def chain_rows(chains: Sequence[Chain], max_len: int, device: torch.device) -> torch.Tensor:
    """The chains' sentences as rows START w… END PAD… [B, max_len]."""
    rows = torch.full((len(chains), max_len), Vocab.PAD_ID, dtype=torch.long, device=device)
    for b, chain in enumerate(chains):
        row = [Vocab.START_ID, *chain.words, Vocab.END_ID]
        rows[b, : len(row)] = torch.tensor(row, device=device)
    return rows


def _score(lm: LM, factor: Factor | None, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_LM(row) + f(row) [B], the log q of every next word at every position [B, L, V])."""
    logp = lm(rows).float().log_softmax(-1)
    steps = logp[:, :-1].gather(-1, rows[:, 1:, None]).squeeze(-1)  # log p(x_t | x_<t)
    counted = counted_positions(rows[:, 1:])  # up to and including END
    log_pi = (steps * counted).sum(1)
    return log_pi if factor is None else log_pi + factor(rows).float(), _words_only(logp)


def _words_only(logits: torch.Tensor) -> torch.Tensor:
    """log q over words: the logits renormalised without PAD, START and END."""
    words = logits.float().clone()
    words[..., [Vocab.PAD_ID, Vocab.START_ID, Vocab.END_ID]] = -math.inf
    return words.log_softmax(-1)


@torch.no_grad()
def cgmh(
    lm: LM,
    starts: Sequence[Chain],
    *,
    steps: int,
    max_len: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    fixed_length: bool = False,
    anneal: bool = False,
    factor: Factor | None = None,
    propose: Propose | None = None,
) -> tuple[list[Chain], float]:
    """Run one chain from each start for `steps` MH steps; (the final states, the share of
    proposals accepted). `max_len` bounds a row (START … END); `fixed_length` makes replace
    moves only; `anneal` lowers T from `temperature` to ANNEAL_FLOOR·temperature; `factor`
    is f(x) of the stationary distribution; `propose` a proposal model reading both sides
    (one call per step on the chains' blanked rows; module docstring).

    Raises:
        ValueError: a start that does not fit max_len, steps < 0 or temperature ≤ 0.
    """
    if steps < 0 or temperature <= 0:
        raise ValueError(f"need steps ≥ 0 and temperature > 0, got {steps}, {temperature}")
    chains = [Chain(list(c.words), list(c.protected)) for c in starts]
    if any(len(c.words) + 2 > max_len or len(c.words) != len(c.protected) for c in chains):
        raise ValueError(f"every start must be words with a protection flag each, at most {max_len - 2} words")
    device = generator.device if generator is not None else torch.device("cpu")

    def uniform() -> float:
        return float(torch.rand((), generator=generator, device=device))

    def pick(k: int) -> int:
        return int(torch.randint(k, (), generator=generator, device=device))

    rows = chain_rows(chains, max_len, device)
    log_p, log_q = _score(lm, factor, rows)
    accepted = proposed = 0
    for step in range(steps):
        T = temperature * (1 - (1 - ANNEAL_FLOOR) * step / max(steps - 1, 1)) if anneal else temperature
        drafts: list[tuple[int, str, int]] = []  # (chain, move, slot) of the moves that can apply
        for b, chain in enumerate(chains):
            n, free = len(chain.words), [i for i, p in enumerate(chain.protected) if not p]
            move = "replace" if fixed_length else MOVES[pick(3)]
            if (
                (move != "insert" and not free)
                or (move == "insert" and n + 2 >= max_len)
                or (move == "delete" and n == 1)
            ):
                continue  # a move that cannot apply is rejected
            drafts.append((b, move, pick(n + 1) if move == "insert" else free[pick(len(free))]))
        proposed += len(chains)
        if not drafts:
            continue
        blanked = None if propose is None else _blanked(propose, chains, drafts, max_len, device)
        live: list[tuple[int, Chain, str, float, float, int, int]] = []  # b, the proposal, log_acceptance's inputs
        for k, (b, move, slot) in enumerate(drafts):
            chain = chains[b]
            # q(· | x_<slot) (the row position before the slot's word predicts it), or the proposal model's
            q = log_q[b, slot] if blanked is None else blanked[k]
            forward = reverse = 0.0
            words, protected = list(chain.words), list(chain.protected)
            if move in ("replace", "insert"):
                w = int(torch.multinomial(q.exp(), 1, generator=generator))
                forward = float(q[w])
            if move in ("replace", "delete"):
                reverse = float(q[chain.words[slot]])
            if move == "replace":
                words[slot] = w
            elif move == "insert":
                words.insert(slot, w)
                protected.insert(slot, False)
            else:
                del words[slot], protected[slot]
            unprotected = sum(not p for p in chain.protected)
            live.append((b, Chain(words, protected), move, forward, reverse, len(chain.words), unprotected))
        new_rows = chain_rows([proposal for _, proposal, *_ in live], max_len, device)
        new_p, new_q = _score(lm, factor, new_rows)
        for k, (b, chain, move, forward, reverse, n, r) in enumerate(live):
            log_a = log_acceptance(move, float(new_p[k]) / T, float(log_p[b]) / T, forward, reverse, n, r)
            if log_a >= 0 or uniform() < math.exp(log_a):
                chains[b], log_p[b], log_q[b] = chain, new_p[k], new_q[k]
                accepted += 1
    return chains, accepted / max(proposed, 1)


def _blanked(
    propose: Propose, chains: list[Chain], drafts: list[tuple[int, str, int]], max_len: int, device: torch.device
) -> torch.Tensor:
    """The proposal model's log q over words [D, V] for each draft (chain, move, slot): its
    chain's row with the slot's word blanked (replace, delete) or a blank inserted (insert)."""
    rows = []
    for b, move, slot in drafts:
        words = list(chains[b].words)
        if move == "insert":
            words.insert(slot, BLANK)
        else:
            words[slot] = BLANK
        rows.append(Chain(words, [False] * len(words)))
    positions = torch.tensor([slot + 1 for _, _, slot in drafts], device=device)  # row position 0 is START
    return _words_only(propose(chain_rows(rows, max_len, device), positions))
