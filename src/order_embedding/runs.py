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
import stat
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
#: Largest JSON file of a run folder that is read (config, vocabulary, index descriptions).
MAX_JSON_BYTES = 64 * 2**20
#: Largest safetensors header, as the safetensors format allows.
MAX_HEADER_BYTES = 100_000_000
#: Longest line of ``metrics.jsonl`` that is read; longer ones are skipped.
MAX_METRICS_LINE = 2**20


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


def open_regular(path: str | os.PathLike, what: str = "file") -> int:
    """A read-only descriptor of ``path`` when it is a regular file (links followed).

    Anything else (a FIFO, a device, a socket, a folder) raises :class:`RunError`
    without being opened for reading, so reading never blocks on it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RunError(f"{path}: {what} not found") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise RunError(f"{path}: not a regular file")
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the check still cannot block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RunError(f"{path}: not a regular file")
    return fd


def _read_exactly(fd: int, n: int, path: str | os.PathLike) -> bytes:
    """``n`` bytes from the descriptor's position; a shorter file raises :class:`RunError`."""
    parts, left = [], n
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            raise RunError(f"{path}: corrupt or truncated (ended {left} bytes early)")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_regular(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_regular`)."""
    fd = open_regular(path, what)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise RunError(f"{path}: {size} bytes, more than the {max_bytes} a {what} may have")
        return _read_exactly(fd, size, path)
    finally:
        os.close(fd)


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file of at most :data:`MAX_JSON_BYTES`, raising :class:`RunError` with the path on any problem."""
    data = read_regular(path, MAX_JSON_BYTES, "JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None) -> None:
    """Write tensors (and JSON-able metadata) as a safetensors file, atomically."""
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, st_save(contiguous, metadata=meta))


def read_header(fd: int, path: str | os.PathLike) -> tuple[bytes, dict[str, Any], int]:
    """The raw first bytes, the parsed header and the data size of a safetensors file open at ``fd``.

    The header's length is the file's first 8 bytes (at most :data:`MAX_HEADER_BYTES`)
    and the data size is the largest tensor end offset; the file must be exactly
    that long, so nothing beyond what the header describes is ever read.
    """
    size = os.fstat(fd).st_size
    bad = f"{path}: corrupt or truncated checkpoint"
    if size < 8:
        raise RunError(f"{bad} ({size} bytes, shorter than a safetensors header)")
    head = _read_exactly(fd, 8, path)
    n = int.from_bytes(head, "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise RunError(f"{bad} (header of {n} bytes in a file of {size})")
    raw = _read_exactly(fd, n, path)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{bad} (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise RunError(f"{bad} (header is not a JSON object)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise RunError(f"{bad} (tensor {name!r} has no valid data_offsets)")
        end = max(end, offsets[1])
    if 8 + n + end != size:
        raise RunError(f"{bad} ({size} bytes, its header describes {8 + n + end})")
    return head + raw, header, end


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file and its JSON metadata; corrupt, truncated or non-regular files raise :class:`RunError`."""
    fd = open_regular(path, "checkpoint")
    try:
        start, header, size = read_header(fd, path)
        data = start + _read_exactly(fd, size, path)
    finally:
        os.close(fd)
    try:
        tensors = st_load(data)
        meta = {k: json.loads(v) for k, v in header.get("__metadata__", {}).items()}
    except (SafetensorError, ValueError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as e:
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
    """The records of ``metrics.jsonl``; a half-written last line and lines over :data:`MAX_METRICS_LINE` are skipped.

    A ``metrics.jsonl`` that is not a regular file raises :class:`RunError`.
    """
    path = Path(run_dir) / METRICS
    if not os.path.lexists(path):
        return
    fd = open_regular(path, "metrics log")
    with os.fdopen(fd, "rb") as f:
        while line := f.readline(MAX_METRICS_LINE + 1):
            if len(line) > MAX_METRICS_LINE:
                while line and not line.endswith(b"\n"):  # the rest of an overlong line
                    line = f.readline(MAX_METRICS_LINE + 1)
                continue
            try:
                yield json.loads(line.decode("utf-8", errors="replace"))
            except json.JSONDecodeError:
                continue
