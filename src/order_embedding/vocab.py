"""Word vocabulary of the sentence encoder.

Index 0 is the end-of-sentence token, 1 the unknown word, and ``words[k]`` has
index ``k + 2``. Words are ordered by descending frequency (ties by first
occurrence); a word whose index is ``>= n_words`` is encoded as unknown, so the
embedding table of the model has ``size`` rows.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .options import integer
from .runs import RunError, load_json, save_json

EOS = 0
UNK = 1
EOS_WORD = "<eos>"
UNK_WORD = "<unk>"


class Vocabulary:
    """Maps whitespace-separated words of a caption to integer ids and back."""

    def __init__(self, words: Sequence[str], n_words: int | None = None, lowercase: bool = False) -> None:
        words = list(words)
        if n_words is not None:  # at least the end-of-sentence and unknown ids
            n_words = integer(n_words, "n_words", 2, allow_text=False)
        if not isinstance(lowercase, bool):
            raise ValueError(f"lowercase must be true or false, got {lowercase!r}")
        index: dict[str, int] = {}
        for k, w in enumerate(words):
            if not isinstance(w, str) or not w or w.split() != [w]:
                raise ValueError(f"vocabulary word {k} is {w!r}: words must be non-empty strings without whitespace")
            if lowercase and w != w.lower():
                raise ValueError(f"vocabulary word {k} ({w!r}) is not lowercase in a lowercasing vocabulary")
            if w in index:
                raise ValueError(f"vocabulary word {w!r} appears twice (positions {index[w] - 2} and {k})")
            index[w] = k + 2
        self.words: list[str] = words
        self.n_words: int | None = n_words
        self.lowercase: bool = lowercase
        self._index = index

    @classmethod
    def build(cls, captions: Iterable[str], n_words: int | None = None, lowercase: bool = False) -> Vocabulary:
        """Vocabulary of all words in ``captions``, by descending frequency, ties by first occurrence."""
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(caption.lower().split() if lowercase else caption.split())
        # Counter keeps first-occurrence order and sorted() is stable, so ties stay in that order.
        words = [w for w, _ in sorted(counts.items(), key=lambda wc: -wc[1])]
        return cls(words, n_words=n_words, lowercase=lowercase)

    @property
    def size(self) -> int:
        """Number of distinct ids ``encode`` can produce: the ``n_words`` of the model."""
        full = len(self.words) + 2
        return full if self.n_words is None else min(self.n_words, full)

    def index(self, word: str) -> int:
        """Id of one word (1 when unknown or beyond ``n_words``)."""
        if self.lowercase:
            word = word.lower()
        i = self._index.get(word, UNK)
        return UNK if self.n_words is not None and i >= self.n_words else i

    def word(self, i: int) -> str:
        """Word of one id (``<eos>`` for 0, ``<unk>`` for 1)."""
        if i == EOS:
            return EOS_WORD
        if i == UNK:
            return UNK_WORD
        if not 2 <= i < self.size:
            raise ValueError(f"word id {i} is outside the vocabulary (0..{self.size - 1})")
        return self.words[i - 2]

    def encode(self, caption: str) -> list[int]:
        """Ids of the whitespace-separated words of ``caption``; no end-of-sentence is appended."""
        return [self.index(w) for w in caption.split()]

    def unknown(self, captions: Iterable[str]) -> list[str]:
        """The distinct words of ``captions`` that :meth:`encode` maps to the unknown id, in order of appearance."""
        found: dict[str, None] = {}
        for caption in captions:
            for w in caption.split():
                if w not in found and self.index(w) == UNK:
                    found[w] = None
        return list(found)

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` joined by spaces, stopping at the first end-of-sentence."""
        out = []
        for i in ids:
            if i == EOS:
                break
            out.append(self.word(int(i)))
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``{"words": [...], "n_words": ..., "lowercase": ...}``."""
        return {"words": list(self.words), "n_words": self.n_words, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, d: Any, source: str = "vocabulary") -> Vocabulary:
        """Inverse of :meth:`to_dict`; ``n_words`` and ``lowercase`` may be absent. Errors name ``source``."""
        if not isinstance(d, dict) or not isinstance(d.get("words"), list):
            raise ValueError(f"{source}: expected a JSON object with a list \"words\"")
        unknown = set(d) - {"words", "n_words", "lowercase"}
        if unknown:
            raise ValueError(f"{source}: unexpected keys {sorted(unknown)}")
        try:
            return cls(d["words"], n_words=d.get("n_words"), lowercase=d.get("lowercase", False))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`; a missing or malformed file raises ``ValueError``."""
        try:
            d = load_json(path)
        except RunError as e:
            raise ValueError(f"vocabulary {e}") from None
        return cls.from_dict(d, source=str(path))

    def __len__(self) -> int:
        """Same as ``size``."""
        return self.size

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self.words, self.n_words, self.lowercase) == (other.words, other.n_words, other.lowercase)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self.words)} words, n_words={self.n_words}, lowercase={self.lowercase}, size={self.size})"
