"""The errors the server's answers are made of: each becomes one status and one line."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class NotFound(LookupError):
    """A run, split or item that the request names does not exist."""


class Unavailable(ValueError):
    """The request is well formed but the run cannot answer it (no model, no data, wrong kind)."""


def validation_detail(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line for a request whose parameters FastAPI refused: each parameter and the rule it broke, never the
    value sent (a 60 KB query is not echoed back)."""
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in tuple(e.get("loc", ()))[1:]) or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid value')}")
    return "; ".join(parts) or "invalid request"
