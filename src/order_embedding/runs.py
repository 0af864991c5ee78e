"""Run folders: config, vocabulary, metrics log and checkpoints, written atomically.

A run folder holds

- ``config.json``: ``{"model": {...}, "train": {...}}``;
- ``vocab.json``: ``{"words": [...]}`` where ``words[k]`` has index ``k + 2``;
- ``metrics.jsonl``: one JSON record per log or validation event;
- ``model.safetensors``: the best parameters so far (what ``load_model`` reads);
- ``last.safetensors``: the latest parameters and optimizer state, with the
  training state as JSON in the file's metadata, for resuming;
- ``.lock``: held (``flock``) by the one process writing the folder.

Tensors are stored with safetensors and everything else as JSON; nothing is pickled.
Files are replaced atomically; a write that finds the disk full leaves the old file
and raises :class:`DiskFullError` naming the file and the space it needed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .options import DEFAULTS

CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.jsonl"
BEST = "model.safetensors"
LAST = "last.safetensors"
LOCK = ".lock"
#: The files of a run folder that are written by atomic replacement.
WRITTEN = (CONFIG, VOCAB, BEST, LAST)
#: Largest JSON file of a run folder that is read (config, vocabulary, index descriptions).
MAX_JSON_BYTES = 64 * 2**20
#: Largest safetensors header, as the safetensors format allows.
MAX_HEADER_BYTES = 100_000_000
#: Longest line of ``metrics.jsonl`` that is read; longer ones are skipped.
MAX_METRICS_LINE = 2**20


class RunError(ValueError):
    """A run folder or one of its files is missing, malformed or corrupt."""


class DiskFullError(RunError):
    """A write found no space left; nothing partial was left behind."""


def disk_full(path: str | os.PathLike, needed: int) -> DiskFullError:
    """The one-line error for a write of ``needed`` bytes to ``path`` that found the disk full."""
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free:,} free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"{path}: no space left on the device (writing {needed:,} bytes, {free})")


def is_disk_full(error: OSError) -> bool:
    """Whether ``error`` says the disk (or the quota) is full."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full(path, len(data)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed write left in a run folder (``.NAME.*.tmp``); returns them.

    Only for the folder's writer, while it holds :func:`lock_run`.
    """
    names = [*WRITTEN, "last.*.safetensors"]  # the per-model checkpoints of a run training several models
    stale = [p for name in names for p in Path(run_dir).glob(f".{name}.*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def lock_run(run_dir: str | os.PathLike) -> IO[bytes]:
    """Create ``run_dir`` and take its exclusive lock; another process holding it raises :class:`RunError`.

    The lock lasts until the returned file is closed or the process ends (a crash included).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK, "wb")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RunError(f"{run_dir}: another process is writing this run folder (it holds {run_dir / LOCK})") from None
    return f


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
    """Append one JSON record as a line of ``metrics.jsonl`` (flushed and synced); a full disk leaves no part line."""
    path = Path(run_dir) / METRICS
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with open(path, "ab") as f:
        start = f.tell()
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            f.truncate(start)
            if is_disk_full(e):
                raise disk_full(path, len(line)) from None
            raise


def truncate_metrics(run_dir: str | os.PathLike, uidx: int, model: str | None = None) -> int:
    """Drop the records logged after update ``uidx`` (a resumed run logs them again), of ``model`` only when
    given (the ``"model"`` of a run training several in turn), and any ``finished`` record; returns how many."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return 0
    records = list(read_metrics(run_dir))

    def later(r: Any) -> bool:
        if not isinstance(r, dict):
            return False
        if r.get("event") == "finished":
            return True
        return (model is None or r.get("model") == model) and isinstance(r.get("uidx"), int) and r["uidx"] > uidx

    kept = [r for r in records if not later(r)]
    half_line = False  # a kill in the middle of writing a record
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            half_line = f.read(1) != b"\n"
    if len(kept) != len(records) or half_line:
        atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())
    return len(records) - len(kept)


def checkpoint_name(model: str | None = None) -> str:
    """The file of a run's last checkpoint: ``last.safetensors``, or ``last.<model>.safetensors`` for one of the
    models a run trains in turn."""
    return LAST if model is None else f"last.{model}.safetensors"


def data_record(data: str, resolved: Path, run_dir: str | os.PathLike) -> dict[str, str]:
    """How a run records its data set: ``data`` (absolute, works from any folder), ``data_relative`` (from the
    run folder, for a checkout moved with its data) and ``data_given`` (as typed, for display)."""
    resolved = resolved.resolve()
    return {"data": str(resolved), "data_given": str(data),
            "data_relative": os.path.relpath(resolved, Path(run_dir).resolve())}


def recorded_data(run_dir: str | os.PathLike | None, train: dict[str, Any]) -> str | None:
    """The data set a run was trained on, found from any working folder: the recorded absolute path, else the
    path relative to the run folder, else the recorded text as given (``None`` when the run records none)."""
    data = train.get("data")
    if not isinstance(data, str) or not data:
        return None
    relative = train.get("data_relative")
    if not Path(data).exists() and run_dir is not None and isinstance(relative, str):
        moved = Path(run_dir) / relative
        if moved.exists():
            return str(moved)
    return data


def run_data(options: dict[str, Any], data: str | os.PathLike | None = None, cnn: str | None = None,
             image_root: str | os.PathLike | None = None,
             run_dir: str | os.PathLike | None = None) -> tuple[str | os.PathLike, str, str | None]:
    """``(data set, features name, image root)`` a run trained on (from its recorded training ``options``, the
    data set found as :func:`recorded_data` finds it from the run folder ``run_dir``), or ``data``; features
    and image root as in training unless given."""
    data = data or recorded_data(run_dir, options)
    if not isinstance(data, (str, os.PathLike)) or not str(data):
        raise ValueError("no data set given and the model records none; pass --data DATA_DIR (data= in Python)")
    cnn = cnn or options.get("cnn")
    root = image_root or options.get("image_root")
    return (data, cnn if isinstance(cnn, str) else DEFAULTS["cnn"],
            str(root) if isinstance(root, (str, os.PathLike)) else None)


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
