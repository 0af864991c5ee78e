"""Typed queries: as a model's vocabulary sees them, and encoded together when they arrive together."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..index import check_query
from ..inference import LoadedModel

#: Longest accepted search query, in characters.
MAX_QUERY_CHARS = 500
#: Most queries encoded in one batch.
MAX_BATCH = 64
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


class Batcher:
    """Runs ``work`` on the items of concurrent callers together: a caller that finds a batch running waits
    and joins the next one, so a burst of searches costs a few batched encodings instead of one each."""

    def __init__(self, work: Callable[[list[Any]], list[Any]], max_batch: int = MAX_BATCH) -> None:
        self.work = work
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[list[Any]] = []
        self._busy = False

    def __call__(self, item: Any) -> Any:
        """``work([item, ...])``'s answer for ``item`` (its error, when the batch failed)."""
        slot = [item, None, None, False]  # item, answer, error, done
        with self._cond:
            self._queue.append(slot)
            while not slot[3]:
                if self._busy:
                    self._cond.wait()
                    continue
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._busy = True
                self._cond.release()
                try:
                    answers = self.work([s[0] for s in batch])
                    for s, answer in zip(batch, answers):
                        s[1] = answer
                except Exception as e:  # every caller of the batch gets the error
                    for s in batch:
                        s[2] = e
                finally:
                    self._cond.acquire()
                    for s in batch:
                        s[3] = True
                    self._busy = False
                    self._cond.notify_all()
        if slot[2] is not None:
            raise slot[2]
        return slot[1]
