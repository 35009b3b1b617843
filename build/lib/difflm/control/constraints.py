"""Constraints that need no classifier: length, infilling, keywords.

Notation (Li et al. 2022 §5, §7; positions follow `Vocab.encode_batch`):

    L           positions per row: START w_1 .. w_n END PAD ... PAD
    i           a position, 0 = START
    p_i(w)      p(w_i = w | x_t), the softmax of the denoiser's word logits at (x_t, t)
    n           the number of words (END sits at position n + 1)
    k           a keyword

Each constraint's log p(c | x_t) is built from the denoiser's own rounding logits, so
no classifier has to be trained:

    Length(n)     Σ_{i≤n} log(1 − p_i(END) − p_i(PAD)) + log p_{n+1}(END) + Σ_{i>n+1} log p_i(PAD)
    Infill        Σ_{i known} log p_i(w_i)                  (+ overwrite of known positions)
    Keywords(K)   Σ_k log(1 − Π_{i≥1}(1 − p_i(k)))          (k appears at least once)

log(1 − Σ_{v∈S} p(v)) is computed as the log-sum-exp of the other words' log-probs, so
it stays exact (and its gradient informative) when p(S) → 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from difflm.control.guidance import check_weight
from difflm.diffusion.process import q_sample
from difflm.text.vocab import Vocab

if TYPE_CHECKING:
    from difflm.control.specs import SpecContext
    from difflm.sampling.wrappers import DenoiserLike


@runtime_checkable
class Checkable(Protocol):
    """A constraint whose success can be read off the generated words."""

    name: str

    def satisfied(self, words: Sequence[str]) -> bool:
        """True when the decoded sentence (START/END/PAD removed) meets the constraint."""
        ...


def word_log_probs(denoiser: DenoiserLike, x: torch.Tensor, t: float) -> torch.Tensor:
    """log p_i(w) from the denoiser's word logits at (x, t): [B, L, d] -> [B, L, V]."""
    times = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)
    return denoiser(x, times).logits.log_softmax(-1)


def log_prob_excluding(log_probs: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """log(1 − Σ_{v∈S_j} p_i(v)) for each set S_j: [B, L, V], bool [J, V] -> [B, L, J]."""
    return log_probs[..., None, :].masked_fill(excluded, -math.inf).logsumexp(-1)


@runtime_checkable
class RestrictsWords(Protocol):
    """A constraint that says outright which words each position may take (known words, the
    END of a fixed length): contextual rounding decodes within it, so the constraint stays exact."""

    def allowed_words(self, vocab_size: int) -> torch.Tensor:
        """[L, V] bool: the words position i may take."""
        ...


@runtime_checkable
class RequiresWords(Protocol):
    """A constraint that needs some words somewhere (keywords): contextual rounding writes
    them before it ends a row, so the constraint stays exact."""

    def required_words(self) -> torch.Tensor:
        """Word ids [K] every sample must contain."""
        ...


@runtime_checkable
class FixesLength(Protocol):
    """A constraint that fixes the number of words (a length, an infill template): a run
    with length anchors writes exactly that many (`model/anchors.py`)."""

    def fixed_length(self) -> int:
        """n, the number of words every sample has."""
        ...


def words_then_end(n: int, max_len: int, vocab_size: int) -> torch.Tensor:
    """[L, V]: START, then n positions of words (no END, PAD or START), END, and PAD after."""
    allowed = torch.zeros(max_len, vocab_size, dtype=torch.bool)
    allowed[0, Vocab.START_ID] = True
    allowed[1 : n + 1] = True
    allowed[1 : n + 1, [Vocab.START_ID, Vocab.END_ID, Vocab.PAD_ID]] = False
    allowed[n + 1, Vocab.END_ID] = True
    allowed[n + 2 :, Vocab.PAD_ID] = True
    return allowed


def _check_length(x: torch.Tensor, max_len: int, what: str) -> None:
    if x.shape[1] != max_len:
        raise ValueError(f"{what} was built for {max_len} positions but the sample has {x.shape[1]}")


class Length:
    """Exactly n words: END at position n + 1, PAD after it, no END or PAD before.

    Args:
        n: the number of words, 1 ≤ n ≤ L − 2.
        max_len: L.
        weight: w_c.

    Raises:
        ValueError: n outside [1, L − 2].
    """

    name = "length"

    def __init__(self, n: int, *, max_len: int, weight: float = 1.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_len - 2:
            raise ValueError(f"length {n!r} is impossible: need 1 ≤ n ≤ L − 2 = {max_len - 2} (L = {max_len})")
        self.n = n
        self.max_len = max_len
        self.weight = check_weight(weight)

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Length:
        """From the CLI: `--length N`."""
        try:
            n = int(spec)
        except ValueError:
            raise ValueError(f"length must be an integer, got {spec!r}") from None
        return cls(n, max_len=context.max_len, weight=weight)

    def log_prob(self, x: torch.Tensor, t: float, denoiser: DenoiserLike) -> torch.Tensor:
        """log p(length = n | x) as a product over positions (see the module docstring)."""
        _check_length(x, self.max_len, f"Length({self.n})")
        lp = word_log_probs(denoiser, x, t)
        n = self.n
        closing = torch.zeros(lp.shape[-1], dtype=torch.bool, device=lp.device)
        closing[[Vocab.END_ID, Vocab.PAD_ID]] = True
        words = log_prob_excluding(lp[:, 1 : n + 1], closing[None])[..., 0].sum(-1)
        end = lp[:, n + 1, Vocab.END_ID]
        pads = lp[:, n + 2 :, Vocab.PAD_ID].sum(-1)
        return words + end + pads

    def satisfied(self, words: Sequence[str]) -> bool:
        return len(words) == self.n

    def fixed_length(self) -> int:
        return self.n

    def allowed_words(self, vocab_size: int) -> torch.Tensor:
        """Words at positions 1..n, END at n + 1, PAD after: [L, V]."""
        return words_then_end(self.n, self.max_len, vocab_size)


class Infill:
    """A template with blanks: the given words stay at their positions, the blanks are generated.

    `"The ___ ___ serves ___ food ."` fixes START, "The", "serves", "food", ".", END after
    the last slot and PAD after it; the three blanks are free. Known positions are
    guided by Σ log p_i(w_i) and, as in Diffusion-LM's infilling, overwritten at every
    step with a draw of q(x_t | EMB(w)) at that step's noise level.

    Args:
        template: words and `blank` markers separated by spaces.
        vocab: maps the given words to ids.
        max_len: L.
        weight: w_c.
        blank: the marker of a blank.

    Raises:
        ValueError: no blank, a word not in the vocabulary (or a special token), or a
            template longer than L − 2 slots.
    """

    name = "infill"

    def __init__(self, template: str, vocab: Vocab, *, max_len: int, weight: float = 1.0, blank: str = "___") -> None:
        slots = template.split()
        if blank not in slots:
            raise ValueError(f"infill template {template!r} has no blank {blank!r}")
        if len(slots) > max_len - 2:
            raise ValueError(
                f"infill template has {len(slots)} slots, needs {len(slots) + 2} positions but max_len is {max_len}"
            )
        for word in slots:
            if word != blank and (word not in vocab or word in Vocab.SPECIALS):
                raise ValueError(f"infill word {word!r} is not in the vocabulary")
        self.slots = slots
        self.blank = blank
        self.max_len = max_len
        self.weight = check_weight(weight)
        # ids [L] of the fully known row (START, words, END, PAD...); blanks hold PAD but are masked out.
        ids = [Vocab.START_ID, *(vocab.id_of(w) if w != blank else Vocab.PAD_ID for w in slots), Vocab.END_ID]
        self.ids = torch.tensor(ids + [Vocab.PAD_ID] * (max_len - len(ids)))
        self.known = torch.tensor([True, *(w != blank for w in slots)] + [True] * (max_len - len(slots) - 1))

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Infill:
        """From the CLI: `--infill "The ___ serves ___ food ."`."""
        return cls(spec, context.vocab, max_len=context.max_len, weight=weight)

    def log_prob(self, x: torch.Tensor, t: float, denoiser: DenoiserLike) -> torch.Tensor:
        """Σ over known positions of log p_i(w_i): [B]."""
        _check_length(x, self.max_len, "the infill template")
        lp = word_log_probs(denoiser, x, t)
        ids, known = self.ids.to(lp.device), self.known.to(lp.device)
        return lp.gather(-1, ids.expand(lp.shape[:2])[..., None])[..., 0][:, known].sum(-1)

    def overwrite(
        self, x: torch.Tensor, t: float, denoiser: DenoiserLike, generator: torch.Generator | None
    ) -> torch.Tensor:
        """x_t with known positions replaced by √ᾱ(t)·EMB(w) + √(1 − ᾱ(t))·ε."""
        _check_length(x, self.max_len, "the infill template")
        target = denoiser.embedding(self.ids.to(x.device))[None].to(x.dtype)  # [1, L, d]
        abar = float(denoiser.schedule.alpha_bar(t))
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return torch.where(self.known.to(x.device)[None, :, None], q_sample(target, abar, noise), x)

    def fix_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] with the known positions set to the template's ids."""
        known = self.known.to(tokens.device)
        return torch.where(known, self.ids.to(tokens.device), tokens)

    def allowed_words(self, vocab_size: int) -> torch.Tensor:
        """Any word in a blank, the given word elsewhere, END after the last slot: [L, V]."""
        allowed = words_then_end(len(self.slots), self.max_len, vocab_size)
        given = torch.zeros_like(allowed).scatter_(1, self.ids[:, None], True)
        return torch.where(self.known[:, None], given, allowed)

    def fixed_length(self) -> int:
        return len(self.slots)

    def satisfied(self, words: Sequence[str]) -> bool:
        """All slots filled (no early END) and every given word in place."""
        return len(words) == len(self.slots) and all(s in (self.blank, w) for s, w in zip(self.slots, words))


def keyword_list(spec: str, max_len: int) -> list[str]:
    """The words of a comma-separated command-line list, e.g. "Zizzi,riverside", that fit a row of max_len."""
    words = [w.strip() for w in spec.split(",")]
    if any(not w for w in words):
        raise ValueError(f"keywords must be comma-separated words, got {spec!r}")
    if len(words) > max_len - 2:
        raise ValueError(f"{len(words)} keywords cannot fit in {max_len - 2} word positions")
    return words


class Keywords:
    """Each keyword appears at least once, anywhere after START.

    log p(k appears) = log(1 − Π_i(1 − p_i(k))) is evaluated as the log of
    Σ_i p_i(k)·Π_{j<i}(1 − p_j(k)) (the first occurrence is at i), a log-sum-exp of
    terms that are all finite, so it is exact whether the keyword is likely or not.

    Args:
        words: the keywords (single vocabulary words).
        vocab: maps them to ids.
        weight: w_c.

    Raises:
        ValueError: no keyword, or a keyword not in the vocabulary.
    """

    name = "keywords"

    def __init__(self, words: Iterable[str], vocab: Vocab, *, weight: float = 1.0) -> None:
        self.words = list(words)
        if not self.words:
            raise ValueError("keywords: give at least one word")
        for word in self.words:
            if word not in vocab or word in Vocab.SPECIALS:
                raise ValueError(f"keyword {word!r} is not in the vocabulary")
        self.ids = torch.tensor([vocab.id_of(w) for w in self.words])
        self.weight = check_weight(weight)

    @classmethod
    def from_spec(cls, spec: str, context: SpecContext, weight: float) -> Keywords:
        """From the CLI: `--keywords "Zizzi,riverside"`."""
        return cls(keyword_list(spec, context.max_len), context.vocab, weight=weight)

    def log_prob(self, x: torch.Tensor, t: float, denoiser: DenoiserLike) -> torch.Tensor:
        """Σ_k log p(k appears at least once | x): [B]."""
        lp = word_log_probs(denoiser, x, t)[:, 1:]  # [B, L−1, V]; START's position cannot hold a word
        ids = self.ids.to(lp.device)
        hit = lp[..., ids]  # log p_i(k), [B, L−1, K]
        excluded = torch.nn.functional.one_hot(ids, lp.shape[-1]).bool()  # [K, V]
        miss = log_prob_excluding(lp, excluded)  # log(1 − p_i(k)), [B, L−1, K]
        # Σ_{j<i} log(1 − p_j(k)): exclusive cumulative sum along the positions.
        before = miss.cumsum(1) - miss
        return (hit + before).logsumexp(1).sum(-1)

    def satisfied(self, words: Sequence[str]) -> bool:
        return all(k in words for k in self.words)

    def required_words(self) -> torch.Tensor:
        """The keywords' ids [K]."""
        return self.ids
