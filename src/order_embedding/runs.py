"""Run folders: config, vocabulary, metrics log and checkpoints, written atomically.

A run folder holds

- ``config.json``: ``{"model": {...}, "train": {...}}``;
- ``vocab.json``: ``{"words": [...]}`` where ``words[k]`` has index ``k + 2``;
- ``metrics.jsonl``: one JSON record per log or validation event;
- ``model.safetensors``: the best parameters so far (what ``load_model`` reads);
- ``last.safetensors``: the latest parameters and optimizer state, with the
  training state as JSON in the file's metadata, for resuming.

Tensors are stored with safetensors and everything else as JSON; nothing is pickled.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.jsonl"
BEST = "model.safetensors"
LAST = "last.safetensors"


class RunError(ValueError):
    """A run folder or one of its files is missing, malformed or corrupt."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`RunError` with the path on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write tensors (and JSON-able metadata) as a safetensors file, atomically."""
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, st_save(contiguous, metadata=meta))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file and its JSON metadata; corrupt or truncated files raise :class:`RunError`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: checkpoint not found") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: corrupt or truncated checkpoint ({e})") from None
    return tensors, meta


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON record as a line of ``metrics.jsonl`` (flushed and synced)."""
    path = Path(run_dir) / METRICS
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a half-written last line is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
