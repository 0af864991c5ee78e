"""The errors the server's answers are made of: each becomes one status and one line."""
from __future__ import annotations


class NotFound(LookupError):
    """A run, split or item that the request names does not exist."""


class Unavailable(ValueError):
    """The request is well formed but the run cannot answer it (no model, no data, wrong kind)."""
