"""The index folder's format: its file names, its description and its errors."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .. import runs
from ..data.npy import DTYPES, NpyFileError
from ..measures import MEASURES

EMBEDDINGS = runs.INDEX_EMBEDDINGS
META = runs.INDEX_META
ANN = "faiss.index"
BOUNDS = "bounds.npy"
FILES = "images.txt"
FORMAT = "order-embedding-index"

__all__ = ["ANN", "BOUNDS", "DTYPES", "EMBEDDINGS", "FILES", "FORMAT", "META", "IndexFileError", "check_meta",
           "check_regular"]


class IndexFileError(NpyFileError):
    """A missing, corrupt or mismatched index folder (message names the file)."""


def _count(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_meta(meta: Any, path: Path) -> dict[str, Any]:
    """``index.json``'s description, each field checked (message names the file and the field)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IndexFileError(f"{path}: not an {FORMAT} description")
    problems = []
    if meta.get("method") not in MEASURES:
        problems.append(f"method must be one of {', '.join(MEASURES)}, got {meta.get('method')!r}")
    if not _count(meta.get("dim"), 1):
        problems.append(f"dim must be a positive integer, got {meta.get('dim')!r}")
    if not _count(meta.get("count"), 0):
        problems.append(f"count must be a whole number, got {meta.get('count')!r}")
    if meta.get("dtype") not in DTYPES:
        problems.append(f"dtype must be one of {', '.join(DTYPES)}, got {meta.get('dtype')!r}")
    if meta.get("run") is not None and not isinstance(meta["run"], str):
        problems.append(f"run must be a folder name, got {meta['run']!r}")
    if "bounds" in meta:
        step = meta["bounds"].get("step") if isinstance(meta["bounds"], dict) else None
        if meta.get("method") != "order" or not isinstance(step, float) or not math.isfinite(step) or step <= 0:
            problems.append(f"bounds need the order measure and a positive step, got {meta['bounds']!r}")
    if problems:
        raise IndexFileError(f"{path}: {problems[0]}")
    return meta


def check_regular(path: Path) -> Path:
    """``path`` when it is a regular file; a FIFO, device or folder is refused without being opened for reading."""
    try:
        os.close(runs.open_regular(path))
    except runs.RunError as e:
        raise IndexFileError(str(e)) from None
    return path
