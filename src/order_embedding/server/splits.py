"""Data splits kept loaded for browsing and search; each data set's split names are read once.

A request for a split the data set does not have is answered from those names,
without reading the data again. Files that are not regular (a FIFO, a device)
in the data folder are refused before anything is opened.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..data import DataError, Split, load_split
from ..data.splits import split_names
from .cache import LRU
from .errors import NotFound, Unavailable
from .runs_view import file_stamp

#: Data splits kept loaded by default.
MAX_SPLITS = 8
#: Entries of a data folder whose stamps tell that it changed.
_STAMPED = 64


def data_stamp(data_dir: Path) -> tuple:
    """What changes when a data folder (or file) changes: the folder and its first entries' stamps."""
    if not data_dir.is_dir():
        return (file_stamp(data_dir),)
    return (file_stamp(data_dir),) + tuple(file_stamp(p) for p in sorted(data_dir.iterdir())[:_STAMPED])


def _special(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # absent, or a dangling link: reported by whoever needs it
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def refuse_special_files(*paths: Path) -> None:
    """Raise :class:`Unavailable` naming the first of ``paths`` (or of a folder's entries) that is neither a
    folder nor a regular file, so that nothing blocks on a FIFO or reads a device."""
    for path in paths:
        if _special(str(path)):
            raise Unavailable(f"{path}: not a regular file")
        if path.is_dir():
            for entry in os.scandir(path):
                if _special(entry.path):
                    raise Unavailable(f"{entry.path}: not a regular file")


class SplitCache:
    """At most ``limit`` loaded splits, keyed by data folder, split name, image root and features."""

    def __init__(self, limit: int = MAX_SPLITS) -> None:
        self.lru = LRU(limit)
        self._names = LRU(limit)

    def peek(self, key: tuple, data_dir: Path) -> Split | None:
        """The loaded split when the data has not changed since, without loading anything."""
        hit = self.lru.get(key)
        return hit[1] if hit is not None and hit[0] == data_stamp(data_dir) else None

    def names(self, data_dir: Path) -> list[str]:
        """The split names of a data set, read again only when it changed."""
        stamp = data_stamp(data_dir)
        with self._names.key_lock(data_dir):
            hit = self._names.get(data_dir)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            refuse_special_files(data_dir)
            try:
                names = split_names(data_dir)
            except (DataError, OSError) as e:
                raise Unavailable(str(e)) from None
            self._names.put(data_dir, (stamp, names))
            return names

    def check_name(self, data_dir: Path, name: str) -> None:
        """Raise :class:`NotFound` when the data set's split names are known and ``name`` is not one of them."""
        hit = self._names.get(data_dir)
        if hit is not None and hit[0] == data_stamp(data_dir) and name not in hit[1]:
            raise NotFound(f"{data_dir}: no split {name!r} (splits: {', '.join(hit[1]) or 'none'})")

    def load(self, key: tuple, data_dir: Path, name: str, cnn: str, image_root: str | None) -> Split:
        """Split ``name`` of ``data_dir``; names the data set does not have raise :class:`NotFound` at once."""
        with self.lru.key_lock(key):
            stamp = data_stamp(data_dir)
            hit = self.lru.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            self.names(data_dir)
            self.check_name(data_dir, name)
            refuse_special_files(data_dir / "images" / cnn)
            try:
                split = load_split(data_dir, name, cnn=cnn, image_root=image_root)
            except DataError as e:
                raise NotFound(str(e)) from None
            except OSError as e:
                raise Unavailable(f"{data_dir}: {e}") from None
            self.lru.put(key, (stamp, split))
            return split
