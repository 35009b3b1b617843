"""Corpus readers: text files and bundled corpora -> lists of tokenised examples.

A corpus is named by a spec string:

    lines:PATH               one sentence per line, whitespace-tokenised; a line
                             "source<TAB>target" also gives the sentence a source text
    e2e:PATH[,PATH...]       E2E NLG data; each file is either the official CSV (columns
                             mr,ref) or Diffusion-LM's "MR||text" lines (autodetected)
    NAME                     a bundled corpus registered with register_corpus()

E2E meaning representations become ``Example.slots`` with the eight canonical slot
names (SLOTS), and ``Example.source``, the MR linearised as Diffusion-LM's src1 files
write it ("name : Aromi | food : Chinese", `linearise`), the input of data-to-text. Slot
values and CSV references are tokenised by :func:`tokenize`, the style of Diffusion-LM's
src1 files ("family-friendly." -> "family - friendly ."), so both formats of the same data
give the same examples.
"""

from __future__ import annotations

import csv
import importlib
import io
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")

# Slot names as spelled in Diffusion-LM's src1 files, where they differ from the canonical ones.
_SRC1_NAMES = {"eatType": "Type", "priceRange": "price", "familyFriendly": "family friendly"}
# Slot names as spelled in the official CSV (canonical) and in the src1 files.
_SLOT_ALIASES = {**{s: s for s in SLOTS}, **{src1: s for s, src1 in _SRC1_NAMES.items()}}

# Bundled corpora whose module registers them on import; imported only when asked for.
_LAZY_MODULES = {"grammar": "difflm.text.grammar"}

_REGISTRY: dict[str, Callable[[], Corpus]] = {}

T = TypeVar("T")

# Order matters: decimals ("30.99") stay whole; an apostrophe glued to a word starts a
# contraction suffix ("isn't" -> "isn 't", as in src1) but a quote before a word does not
# ("'Aromi'" -> "' Aromi '"); runs of dots ("..") are one token; any other symbol
# ("-", "£", ",") stands alone.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|(?<=\w)'\w+|\w+|\.+|[^\w\s]")

# One "slot[value]" item of an official MR, e.g. "customer rating[5 out of 5]".
_CSV_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")


class CorpusError(ValueError):
    """Bad corpus input: the message is one line naming the spec or file (and line)."""


@dataclass(frozen=True)
class Example:
    """One sentence and, for data-to-text corpora, its meaning representation.

    Attributes:
        tokens: the words of the sentence.
        slots: slot name -> value (e.g. {"food": "Chinese"}); empty for plain text.
        source: the tokens of the text the sentence was written from (data-to-text: the
            linearised MR); empty when there is none.
    """

    tokens: tuple[str, ...]
    slots: Mapping[str, str] = field(default_factory=dict)
    source: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Frozen means frozen: copy the inputs into immutable containers.
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "slots", MappingProxyType(dict(self.slots)))
        object.__setattr__(self, "source", tuple(self.source))


@dataclass
class Corpus:
    """The examples read from one spec.

    Attributes:
        examples: in file order.
        source: the spec that was read.
        skipped: number of skipped input lines per reason, e.g. {"blank": 3}.
    """

    examples: list[Example]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def sentences(self) -> list[tuple[str, ...]]:
        """The token tuples of all examples (what ``Vocab.build`` takes)."""
        return [ex.tokens for ex in self.examples]


def tokenize(text: str) -> list[str]:
    """Splits raw English text into words and punctuation, in Diffusion-LM's E2E style.

    >>> tokenize("Aromi isn't family-friendly, £20-25.")
    ['Aromi', 'isn', "'t", 'family', '-', 'friendly', ',', '£', '20', '-', '25', '.']
    """
    return _TOKEN.findall(text)


def linearise(slots: Mapping[str, str]) -> tuple[str, ...]:
    """An MR as the tokens of Diffusion-LM's src1 format, slots in SLOTS order.

    >>> linearise({"food": "Chinese", "name": "Aromi"})
    ('name', ':', 'Aromi', '|', 'food', ':', 'Chinese')
    """
    items = [f"{_SRC1_NAMES.get(slot, slot)} : {slots[slot]}" for slot in SLOTS if slot in slots]
    return tuple(" | ".join(items).split())


def source_tokens(text: str) -> tuple[str, ...]:
    """The tokens of a source given as text: an official MR ("name[Aromi], food[Chinese]") is
    linearised (`linearise`); anything else (a src1 MR, "name : Aromi | food : Chinese", or
    other text) is split on whitespace.

    Raises:
        CorpusError: an official MR with an unknown or repeated slot.
    """
    items = list(_CSV_SLOT.finditer(text))
    if items and "".join(m.group(0) for m in items) == text:
        return linearise(_slots([(m.group(1), m.group(2)) for m in items], "the source"))
    return tuple(text.split())


def mr_slots(source: Sequence[str]) -> dict[str, str]:
    """The slots of a source linearised as `linearise` writes it; {} for any other text.

    >>> mr_slots(("name", ":", "Blue", "Spice", "|", "food", ":", "Chinese"))
    {'name': 'Blue Spice', 'food': 'Chinese'}
    """
    pairs = []
    for item in " ".join(source).split(" | "):
        slot, colon, value = item.partition(" : ")
        if not colon:
            return {}
        pairs.append((slot, value))
    try:
        return _slots(pairs, "the source")
    except CorpusError:
        return {}


def register_corpus(name: str, loader: Callable[[], Corpus]) -> None:
    """Makes ``read_corpus(name)`` call ``loader``. A later registration replaces an earlier one."""
    if not name or ":" in name:
        raise ValueError(f"corpus name must be non-empty and contain no ':', got {name!r}")
    _REGISTRY[name] = loader


def bundled_corpora() -> list[str]:
    """Names of the corpora ``read_corpus`` accepts without a path, sorted."""
    for name in _LAZY_MODULES:
        try:
            _ensure_registered(name)
        except CorpusError:
            pass  # an unavailable corpus is simply not listed
    return sorted(_REGISTRY)


def read_corpus(spec: str) -> Corpus:
    """Reads the corpus named by ``spec`` (see the module docstring for the forms).

    Raises:
        CorpusError: unknown spec, or bad input; the message names the file and line.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind == "lines":
        return _read_lines(spec, _path(spec, rest))
    if sep and kind == "e2e":
        corpus = Corpus([], spec, {})
        for part in rest.split(","):
            one = _read_e2e(_path(spec, part))
            corpus.examples.extend(one.examples)
            for reason, n in one.skipped.items():
                _skip(corpus, reason, n)
        return corpus
    if spec in _REGISTRY or spec in _LAZY_MODULES:
        _ensure_registered(spec)
        return _REGISTRY[spec]()
    names = ", ".join(sorted({*_REGISTRY, *_LAZY_MODULES}))
    raise CorpusError(f"unknown corpus {spec!r}: expected lines:PATH, e2e:PATH[,PATH...] or a bundled name ({names})")


def split(examples: Sequence[T], holdout: float | int, seed: int) -> tuple[list[T], list[T]]:
    """Deterministic random train / held-out split; each side keeps the input order.

    Args:
        examples: the items to split.
        holdout: held-out share (a float in (0, 1)) or count (an int).
        seed: the same seed and input give the same split.

    Returns:
        (train, held_out).

    Raises:
        ValueError: ``holdout`` is out of range or leaves either side empty.
    """
    n = len(examples)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)):
        raise ValueError(f"holdout must be a float in (0, 1) or an int count, got {holdout!r}")
    if isinstance(holdout, float):
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout fraction must be in (0, 1), got {holdout}")
        n_held = round(n * holdout)
    else:
        n_held = holdout
    if not 0 < n_held < n:
        raise ValueError(f"holdout={holdout!r} of {n} examples leaves train or held-out empty")
    held = set(random.Random(seed).sample(range(n), n_held))
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [ex for i, ex in enumerate(examples) if i in held]


def _ensure_registered(name: str) -> None:
    """Imports the module that registers a bundled corpus, if it has not run yet."""
    if name in _REGISTRY:
        return
    module = _LAZY_MODULES[name]
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise CorpusError(f"bundled corpus {name!r} is unavailable: cannot import {module} ({e})") from None
    if name not in _REGISTRY:
        raise CorpusError(f"bundled corpus {name!r} is unavailable: {module} did not register it")


def _path(spec: str, text: str) -> Path:
    if not text.strip():
        raise CorpusError(f"corpus spec {spec!r} has an empty path")
    return Path(text.strip())


def _read_text(path: Path) -> str:
    """The file's text; a missing file or non-UTF-8 bytes raise CorpusError naming the line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, not a file") from None
    try:
        return data.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it would also break on \x0b, \x1c, U+2028 inside a sentence.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _skip(corpus: Corpus, reason: str, n: int = 1) -> None:
    corpus.skipped[reason] = corpus.skipped.get(reason, 0) + n


def _checked(corpus: Corpus, path: Path) -> Corpus:
    if not corpus.examples:
        raise CorpusError(f"{path}: no sentences in file")
    return corpus


def _read_lines(spec: str, path: Path) -> Corpus:
    corpus = Corpus([], spec, {})
    for lineno, line in enumerate(_lines(_read_text(path)), start=1):
        source, tab, target = line.partition("\t") if "\t" in line else ("", "", line)
        tokens = target.split()
        if tab and not (tokens and source.split()):
            raise CorpusError(f"{path}:{lineno}: expected 'source<TAB>target' with both sides non-empty")
        if tokens:
            corpus.examples.append(Example(tuple(tokens), source=tuple(source.split())))
        else:
            _skip(corpus, "blank")
    return _checked(corpus, path)


def _read_e2e(path: Path) -> Corpus:
    text = _read_text(path)
    first = next((line for line in _lines(text) if line.strip()), None)
    if first is None:
        raise CorpusError(f"{path}: no sentences in file")
    read = _read_src1 if "||" in first else _read_csv
    return _checked(read(path, text), path)


def _read_src1(path: Path, text: str) -> Corpus:
    """Diffusion-LM's format: ``name : Aromi | food : Chinese||Aromi serves Chinese food .``"""
    corpus = Corpus([], f"e2e:{path}", {})
    for lineno, line in enumerate(_lines(text), start=1):
        if not line.strip():
            _skip(corpus, "blank")
            continue
        where = f"{path}:{lineno}"
        mr, sep, sentence = line.partition("||")
        if not sep:
            raise CorpusError(f"{where}: expected 'MR||text', found no '||'")
        tokens = tuple(sentence.split())
        if not tokens:
            raise CorpusError(f"{where}: empty text after '||'")
        pairs = []
        for item in mr.split("|"):
            slot, colon, value = item.partition(":")
            if not colon:
                raise CorpusError(f"{where}: MR item {item.strip()!r} is not 'slot : value'")
            pairs.append((slot, value))
        slots = _slots(pairs, where)
        corpus.examples.append(Example(tokens, slots, linearise(slots)))
    return corpus


def _read_csv(path: Path, text: str) -> Corpus:
    """The official E2E CSV: ``mr,ref`` with MRs like ``name[Aromi], food[Chinese]``."""
    corpus = Corpus([], f"e2e:{path}", {})
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows)
    while not any(cell.strip() for cell in header):  # blank lines before the header
        _skip(corpus, "blank")
        header = next(rows)
    header = [cell.strip() for cell in header]
    if "mr" not in header or "ref" not in header:
        raise CorpusError(
            f"{path}:{rows.line_num}: neither 'MR||text' lines nor a CSV with 'mr' and 'ref' columns "
            f"(header: {','.join(header)[:80]!r})"
        )
    i_mr, i_ref = header.index("mr"), header.index("ref")
    for row in rows:
        where = f"{path}:{rows.line_num}"
        if not any(cell.strip() for cell in row):
            _skip(corpus, "blank")
            continue
        if len(row) != len(header):
            raise CorpusError(f"{where}: {len(row)} columns, header has {len(header)}")
        tokens = tuple(tokenize(row[i_ref]))
        if not tokens:
            raise CorpusError(f"{where}: empty ref")
        mr = row[i_mr]
        items = list(_CSV_SLOT.finditer(mr))
        if not items or "".join(m.group(0) for m in items) != mr:
            raise CorpusError(f"{where}: MR {mr!r} is not 'slot[value], slot[value], ...'")
        slots = _slots([(m.group(1), m.group(2)) for m in items], where)
        corpus.examples.append(Example(tokens, slots, linearise(slots)))
    return corpus


def _slots(pairs: list[tuple[str, str]], where: str) -> dict[str, str]:
    """Canonical slot names; values tokenised like the text so both formats agree."""
    slots: dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = _SLOT_ALIASES.get(raw_name.strip())
        if name is None:
            raise CorpusError(f"{where}: unknown E2E slot {raw_name.strip()!r} (known: {', '.join(SLOTS)})")
        if name in slots:
            raise CorpusError(f"{where}: slot {name!r} appears twice in the MR")
        value = " ".join(tokenize(raw_value))
        if not value:
            raise CorpusError(f"{where}: slot {name!r} has an empty value")
        slots[name] = value
    return slots
