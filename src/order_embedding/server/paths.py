"""Paths in answers shown relative to the folders the server was started with, and files served only from under a root."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: An absolute path inside a message: starts with "/" after a space, quote or bracket.
_ABSOLUTE = re.compile(r"(?<![\w.~\-/])/[^\s'\"`,;:()\[\]{}<>]+")


class PathView:
    """Rewrites absolute paths: under a known folder to ``label/relative``, anywhere else to ``…/name``."""

    def __init__(self, roots: Iterable[tuple[str | os.PathLike, str]]) -> None:
        forms: list[tuple[str, str]] = []
        for root, label in roots:
            for form in {os.path.abspath(root), str(Path(root).resolve())}:
                forms.append((form.rstrip("/") or "/", label))
        self._roots = sorted(forms, key=lambda f: -len(f[0]))  # the deepest folder wins

    def path(self, path: str | os.PathLike) -> str:
        """How ``path`` is shown: relative paths as they are, absolute ones relative to a known folder or by name."""
        text = str(path)
        if not text.startswith("/"):
            return text
        norm = os.path.normpath(text)
        for root, label in self._roots:
            if norm == root:
                return label
            if norm.startswith(root + "/"):
                return f"{label}/{norm[len(root) + 1:]}"
        return f"…/{os.path.basename(norm)}" if os.path.basename(norm) else "…"

    def text(self, message: str) -> str:
        """``message`` with every absolute path in it shown by :meth:`path`."""
        return _ABSOLUTE.sub(lambda m: self.path(m.group(0)), message)

    def json(self, value: Any) -> Any:
        """A copy of a JSON value whose strings are shown by :meth:`text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.json(v) for k, v in value.items()}
        return value


def safe_path(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it is an existing regular file that resolves (links followed) strictly under ``root``."""
    if not relative or "\x00" in relative:
        return None
    root = root.resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if path == root or not path.is_relative_to(root) or not path.is_file():
        return None
    return path
