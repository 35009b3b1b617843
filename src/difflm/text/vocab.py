"""Word-level vocabulary: the map between words and the integer ids the embedding reads.

Ids 0-3 are reserved for the special tokens, in this order, in every vocabulary:

    PAD = 0 "<pad>"   fills positions after END (the model still denoises them)
    START = 1 "<s>"   first position of every row
    END = 2 "</s>"    closes the sentence
    UNK = 3 "<unk>"   any word not in the vocabulary

Words follow from id 4 on, most frequent first (ties broken by the string), so that
building twice from the same corpus gives the same ids.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

_FORMAT = "difflm.vocab"
_VERSION = 1


class Vocab:
    """An immutable word <-> id table with the four special tokens at ids 0-3.

    Args:
        words: the ordinary words, in id order (they get ids 4, 5, ...). Must not repeat
            and must not contain the special token strings.
    """

    PAD_ID = 0
    START_ID = 1
    END_ID = 2
    UNK_ID = 3
    PAD = "<pad>"
    START = "<s>"
    END = "</s>"
    UNK = "<unk>"
    SPECIALS = (PAD, START, END, UNK)

    def __init__(self, words: Iterable[str]) -> None:
        self._tokens: tuple[str, ...] = self.SPECIALS + tuple(words)
        self._ids: dict[str, int] = {}
        for i, token in enumerate(self._tokens):
            if not isinstance(token, str) or not token:
                raise ValueError(f"vocabulary entry {i} must be a non-empty string, got {token!r}")
            if token in self._ids:
                raise ValueError(f"vocabulary entry {i} repeats token {token!r}")
            self._ids[token] = i

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], *, min_count: int = 1, max_size: int | None = None) -> Vocab:
        """Counts the words of a corpus and keeps the frequent ones.

        Args:
            sentences: tokenised sentences.
            min_count: keep words seen at least this many times.
            max_size: total number of ids, the four specials included (this is V, the
                rows of the embedding matrix); the most frequent words are kept.

        Returns:
            A vocabulary ordered by count (descending), then by string.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < len(cls.SPECIALS):
            raise ValueError(f"max_size must be >= {len(cls.SPECIALS)} (the specials), got {max_size}")
        counts = Counter(word for sentence in sentences for word in sentence)
        # A literal "<unk>" etc. in the text already has its id; it must not be added twice.
        kept = [(w, c) for w, c in counts.items() if c >= min_count and w not in cls.SPECIALS]
        kept.sort(key=lambda wc: (-wc[1], wc[0]))
        if max_size is not None:
            kept = kept[: max_size - len(cls.SPECIALS)]
        return cls(w for w, _ in kept)

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens in id order, specials first."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)})"

    def id_of(self, token: str) -> int:
        """Returns the id of ``token``; raises ValueError if it is not in the vocabulary."""
        try:
            return self._ids[token]
        except KeyError:
            raise ValueError(f"token {token!r} is not in the vocabulary ({len(self)} tokens)") from None

    def token_of(self, token_id: int) -> str:
        """Returns the token with id ``token_id``; raises ValueError if out of range."""
        token_id = int(token_id)
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} is out of range for a vocabulary of {len(self)}")
        return self._tokens[token_id]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Maps words to ids; unknown words map to UNK. Adds no START/END."""
        return [self._ids.get(token, self.UNK_ID) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Maps ids back to words: drops START, stops at the first END or PAD.

        Accepts any iterable of ints, including a 1-D tensor.
        """
        words = []
        for token_id in ids:
            token_id = int(token_id)
            if token_id in (self.END_ID, self.PAD_ID):
                break
            if token_id != self.START_ID:
                words.append(self.token_of(token_id))
        return words

    def encode_batch(
        self, sentences: Sequence[Sequence[str]], max_len: int, *, overlong: Literal["truncate", "refuse"] = "truncate"
    ) -> tuple[torch.Tensor, int]:
        """Encodes sentences into fixed-length rows ``START w1..wn END PAD...``.

        Args:
            sentences: tokenised sentences.
            max_len: L, the row length; START and END take two positions of it.
            overlong: what to do with a sentence longer than ``max_len - 2`` words:
                "truncate" keeps its first ``max_len - 2`` words (then END), "refuse"
                raises ValueError naming the row.

        Returns:
            (ids, n_truncated): a LongTensor [B, L] and how many rows were truncated.
        """
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3 (START, one word, END), got {max_len}")
        if overlong not in ("truncate", "refuse"):
            raise ValueError(f"overlong must be 'truncate' or 'refuse', got {overlong!r}")
        out = torch.full((len(sentences), max_len), self.PAD_ID, dtype=torch.long)
        n_truncated = 0
        room = max_len - 2
        for row, sentence in enumerate(sentences):
            if len(sentence) > room:
                if overlong == "refuse":
                    raise ValueError(
                        f"sentence {row} has {len(sentence)} words, needs {len(sentence) + 2} "
                        f"positions but max_len is {max_len}"
                    )
                sentence = sentence[:room]
                n_truncated += 1
            ids = [self.START_ID, *self.encode(sentence), self.END_ID]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out, n_truncated

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: format tag, version and all tokens in id order."""
        return {"format": _FORMAT, "version": _VERSION, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, data: Any) -> Vocab:
        """Inverse of :meth:`to_dict`; raises ValueError saying what is wrong."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a difflm vocabulary (expected an object with format {_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise ValueError(f"unsupported vocabulary version {data.get('version')!r} (expected {_VERSION})")
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError("vocabulary 'tokens' must be a list of strings")
        n = len(cls.SPECIALS)
        if tuple(tokens[:n]) != cls.SPECIALS:
            raise ValueError(f"vocabulary must start with the special tokens {list(cls.SPECIALS)}")
        return cls(tokens[n:])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the vocabulary as JSON, atomically (a reader never sees half a file)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False, indent=0)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        """Reads a vocabulary written by :meth:`save`.

        Raises:
            ValueError: one line naming the path and the problem (missing, not UTF-8,
                truncated or corrupt JSON, or not a vocabulary).
        """
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ValueError(f"{path}: vocabulary file not found") from None
        except IsADirectoryError:
            raise ValueError(f"{path}: is a directory, not a vocabulary file") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: vocabulary file is not UTF-8 (byte {e.start})") from None
        try:
            data = json.loads(text)  # plain data only: loading never runs code
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: vocabulary file is truncated or corrupt JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def without_unk(logits: torch.Tensor) -> torch.Tensor:
    """Word logits [..., V] with <unk> barred (−inf) wherever another word is possible (finite).

    <unk> stands for every word the vocabulary left out, so it is never the word a sentence
    needs; where a constraint leaves only it (an unknown word given to infill), it stays.
    Every sampler that writes words applies it: the contextual decoder, the masked and uniform
    samplers and the AR LM.
    """
    others = logits.clone()
    others[..., Vocab.UNK_ID] = -torch.inf
    alone = ~others.isfinite().any(-1, keepdim=True)
    return torch.where(alone, logits, others)
