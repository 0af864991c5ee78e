"""Typed queries as a model's vocabulary sees them."""
from __future__ import annotations

from ..index import check_query
from ..inference import LoadedModel

#: Longest accepted search query, in characters.
MAX_QUERY_CHARS = 500
_PUNCTUATION = ".,;:!?\"'()"


def tokens(model: LoadedModel, query: str) -> tuple[str, list[str]]:
    """The query as the vocabulary's words (case and trailing punctuation fixed when that finds a word), and its unknown words."""
    check_query(query)
    words, unknown = [], []
    for raw in query.split():
        pieces = [raw.strip(_PUNCTUATION)] if raw.strip(_PUNCTUATION) else [raw]
        for w in pieces:
            known = next((c for c in (w, w.lower(), raw) if model.vocab.index(c) > 1), None)
            words.append(known or w)
            if known is None:
                unknown.append(w)
    return " ".join(words), unknown
