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

This module is also the project's one reader and writer of files: every file is read
through :func:`open_regular` (regular files only, within a size bound, JSON within a
nesting bound, lines ended by ``\\n``, ``\\r\\n`` or ``\\r``), and every output is written
through :func:`atomic_write` (with the user's umask) after :func:`check_output` has
made sure it replaces none of the command's inputs and lies in no run, data or index
folder; a set of files is committed together by :func:`write_files`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
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
#: Deepest nesting of arrays and objects in a JSON document that is read (the project's own are under 10).
MAX_JSON_DEPTH = 100
#: Longest line of a line-per-item text file (a caption, an image path, a WordNet or SNLI record).
MAX_LINE_BYTES = 2**20
#: The index folder's own files, by which ``index build --overwrite`` recognises a folder it may replace.
INDEX_META = "index.json"
INDEX_EMBEDDINGS = "embeddings.npy"
#: The file a run folder of every kind holds (with at least one of :data:`RUN_MARKS`).
RUN_MARKS = (VOCAB, METRICS, BEST, LAST, LOCK, "results.json")


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_file(path: Path) -> tuple[int, str]:
    """A new hidden temporary file beside ``path`` (``.NAME.*.tmp``) with the mode a plain ``open`` would give it.

    ``mkstemp`` makes it 0600 whatever the umask; the finished file is meant to be read
    as the user's other files are. Temporaries of ``path`` left by a killed process
    (whose writer no longer runs) are removed first.
    """
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the hidden temporaries of ``path`` (files ``.NAME.PID.*.tmp``, folders ``.NAME.tmp-PID``) whose
    process is gone, as a ``kill -9`` leaves them; returns what was removed."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}(?:\.(\d+)\..*\.tmp|\.(?:tmp|old)-(\d+))$")
    for p in entries:
        m = pattern.match(p.name)
        if not m or _alive(int(m.group(1) or m.group(2))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)
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


def folder_kind(folder: str | os.PathLike) -> str | None:
    """``"run"``, ``"index"`` or ``"data"`` when ``folder`` is a folder of that kind (by its own files), else None.

    A run folder holds ``config.json`` and one of :data:`RUN_MARKS`; an index folder
    ``index.json`` and ``embeddings.npy``; a data folder a Karpathy ``dataset_*.json``,
    VSE++ ``*_caps.txt``, or ``{split}.txt`` with its ``{split}_images.txt`` or its
    features ``images/*/{split}.npy`` (the layouts :mod:`order_embedding.data.splits` reads).
    """
    folder = Path(folder)
    try:
        names = {p.name for p in folder.iterdir()}
    except OSError:
        return None
    if CONFIG in names and names & set(RUN_MARKS):
        return "run"
    if {INDEX_META, INDEX_EMBEDDINGS} <= names:
        return "index"
    stems = {n[:-4] for n in names if n.endswith(".txt")}
    if (any(n.startswith("dataset_") and n.endswith(".json") for n in names)
            or any(n.endswith("_caps.txt") for n in names)
            or any(f"{stem}_images" in stems for stem in stems)
            or any(next((folder / "images").glob(f"*/{stem}.npy"), None) for stem in stems if "images" in names)):
        return "data"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def check_output(path: str | os.PathLike, option: str, inputs: Iterable[str | os.PathLike | None] = (),
                 folder: bool = False, creates: Iterable[str | os.PathLike] = ()) -> Path:
    """``path`` as a place a command may write its output ``option`` (``--out``, ``--json`` ...); else :class:`RunError`.

    Refused: an empty path; one of the command's ``inputs`` (the same file, links
    followed), or, for a ``folder`` output, a folder holding one of them; a path inside
    a run, data or index folder, or inside a folder the command itself ``creates`` (its
    run folder); a file output where a folder is. What a folder output may replace is
    :func:`replace_folder`'s rule.
    """
    if not str(path):
        raise RunError(f"{option}: an empty path")
    path = Path(path)
    target = path.resolve()
    for given in inputs:
        if given is None or not str(given):
            continue
        source = Path(given)
        if _same_file(path, source) or target == source.resolve():
            raise RunError(f"{option} {path}: is also an input of this command ({source}); write the output elsewhere")
        if folder and source.resolve().is_relative_to(target):
            raise RunError(f"{option} {path}: holds an input of this command ({source}); write the output elsewhere")
    if not folder and target.is_dir():
        raise RunError(f"{option} {path}: is a folder; give a file name")
    for own in creates:
        if target.is_relative_to(Path(own).resolve()):
            raise RunError(f"{option} {path}: lies inside the run folder {own} this command writes; write it elsewhere")
    for parent in target.parents:
        kind = folder_kind(parent)
        if kind is not None:
            raise RunError(f"{option} {path}: lies inside the {kind} folder {parent}; write the output elsewhere")
    return path


def write_output(path: str | os.PathLike, data: bytes, option: str,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Write a command's output file (after :func:`check_output`), atomically."""
    atomic_write(check_output(path, option, inputs), data)


class _SignalsHeld:
    """Hold SIGINT, SIGTERM and SIGHUP while a few renames run, so that they all happen or none does;
    a signal that arrives meanwhile is delivered when the block ends."""

    SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

    def __enter__(self) -> None:
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def __exit__(self, *exc: object) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def write_files(folder: str | os.PathLike, files: Mapping[str, bytes | None]) -> None:
    """Write several files of ``folder`` together: each is written to a temporary file first, and only when all
    are written are they renamed into place (``None`` removes that file), with signals held; a failure
    before that leaves every file as it was."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[Path, str] = {}
    try:
        for name, data in files.items():
            if data is None:
                continue
            fd, tmp = temporary_file(folder / name)
            done[folder / name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        with _SignalsHeld():
            for name, data in files.items():
                if data is None:
                    (folder / name).unlink(missing_ok=True)
            for target, tmp in done.items():
                os.replace(tmp, target)
            done.clear()
    except OSError as e:
        if is_disk_full(e):
            raise disk_full(folder, sum(len(d) for d in files.values() if d is not None)) from None
        raise
    finally:
        for tmp in done.values():
            Path(tmp).unlink(missing_ok=True)


def staging_folder(out: str | os.PathLike) -> Path:
    """A new empty hidden folder beside ``out`` (``.NAME.tmp-PID``) to assemble it in, for :func:`replace_folder`;
    those left by killed processes are removed first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o777)
    return tmp


def check_replaceable(out: str | os.PathLike, kind: str, overwrite: bool, option: str = "--out") -> None:
    """Refuse (:class:`RunError`) to put a folder of ``kind`` at ``out`` when something is there, unless
    ``overwrite`` is given and ``out`` is an empty folder or a folder of the same ``kind``."""
    out = Path(out)
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise RunError(f"{option} {out}: already exists; pass --overwrite to replace it")
    if out.is_symlink() or not out.is_dir():
        raise RunError(f"{option} {out}: is not a folder; only an {kind} folder is replaced")
    found = folder_kind(out)
    if found != kind and any(out.iterdir()):
        what = f"a {found} folder" if found else f"a folder that is not an {kind} folder"
        raise RunError(f"{option} {out}: is {what}; --overwrite replaces only an {kind} folder")


def replace_folder(tmp: Path, out: str | os.PathLike) -> None:
    """Move the assembled folder ``tmp`` to ``out`` whole (signals held), replacing what
    :func:`check_replaceable` allowed."""
    out = Path(out)
    with _SignalsHeld():
        if os.path.lexists(out):
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)


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
    if stat.S_ISDIR(st.st_mode):
        raise RunError(f"{path}: is a folder, not a {what}")
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


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings not counted)."""
    # Escape pairs go first (left to right, as a parser pairs them): a quote left after a backslash is then
    # escaped, and every other quote opens or closes a string.
    bare = data.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    deepest, level, inside, block = 0, 0, 0, 1 << 22
    for start in range(0, len(bare), block):
        b = np.frombuffer(bare, dtype=np.uint8, count=min(block, len(bare) - start), offset=start)
        quotes = np.cumsum(b == ord('"'), dtype=np.int64) + inside
        outside = (quotes - (b == ord('"'))) % 2 == 0
        step = ((b == ord("[")) | (b == ord("{"))).astype(np.int64) - ((b == ord("]")) | (b == ord("}")))
        levels = np.cumsum(step * outside, dtype=np.int64) + level
        deepest, level, inside = max(deepest, int(levels.max())), int(levels[-1]), int(quotes[-1]) % 2
    return deepest


def parse_json(data: bytes | str, source: str | os.PathLike) -> Any:
    """JSON text (UTF-8) nested at most :data:`MAX_JSON_DEPTH` deep, parsed; any problem raises
    :class:`RunError` naming ``source`` (a file, or a file and line)."""
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    depth = 0 if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH else json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise RunError(f"{source}: JSON nested {depth} deep, more than the {MAX_JSON_DEPTH} levels read")
    try:
        return json.loads(raw.decode("utf-8") if isinstance(data, bytes) else data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise RunError(f"{source}: not valid JSON ({e})") from None


def load_json(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file of at most ``max_bytes`` (see :func:`parse_json`); any problem raises :class:`RunError`
    naming the file."""
    return parse_json(read_regular(path, max_bytes, "JSON file"), path)


def _renamed(d: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``d`` with its key ``old`` called ``new``, in the same place (``d`` itself when it has no ``old``,
    or already a ``new``)."""
    if old not in d or new in d:
        return d
    return {(new if k == old else k): v for k, v in d.items()}


def load_config(path: str | os.PathLike) -> Any:
    """A run's ``config.json`` (see :func:`load_json`), with the keys of older run folders read by today's names:
    a hypernym or entailment run's ``model.measures`` as ``model.methods``, and each model's
    ``train.<model>.measure`` as ``method``."""
    cfg = load_json(path)
    if not isinstance(cfg, dict) or cfg.get("kind") not in ("hypernym", "entailment"):
        return cfg
    if isinstance(cfg.get("model"), dict):
        cfg["model"] = _renamed(cfg["model"], "measures", "methods")
    if isinstance(cfg.get("train"), dict):
        cfg["train"] = {m: _renamed(o, "measure", "method") if isinstance(o, dict) else o for m, o in cfg["train"].items()}
    return cfg


def iter_lines(path: str | os.PathLike, what: str = "file", max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a regular file as bytes, without their ends: ``\\n``, ``\\r\\n`` and ``\\r`` all end a line.

    Read a block at a time, so memory stays bounded by the block and ``max_line``; a
    line longer than ``max_line`` bytes, or a file that is not regular (a FIFO, a device)
    raises :class:`RunError` naming the file (and the line).
    """
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        rest, number, cr = b"", 0, False
        while block := f.read(1 << 20):
            if cr and block.startswith(b"\n"):  # the \r\n pair split across two blocks
                block = block[1:]
            cr = block.endswith(b"\r")
            lines = (rest + block).splitlines()
            rest = b"" if block.endswith((b"\n", b"\r")) or not lines else lines.pop()
            for line in lines:
                number += 1
                if len(line) > max_line:
                    raise RunError(f"{path}: line {number} is longer than {max_line:,} bytes")
                yield line
            if len(rest) > max_line:
                raise RunError(f"{path}: line {number + 1} is longer than {max_line:,} bytes")
        if rest:
            yield rest


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
        header = parse_json(raw, "header")
    except RunError as e:
        raise RunError(f"{bad} ({e})") from None
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
        meta = {k: parse_json(v, f"metadata {k!r}") for k, v in header.get("__metadata__", {}).items()}
    except (SafetensorError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: corrupt or truncated checkpoint ({e})") from None
    return tensors, meta


def check_progress(source: str | os.PathLike, counts: Mapping[str, int], limits: Mapping[str, int]) -> None:
    """Refuse (:class:`RunError`) resume state that the run's config could not have produced: each count of
    ``counts`` (epochs, updates ... done) at most its limit in ``limits``."""
    for name, value in counts.items():
        if value > limits[name]:
            raise RunError(f"{source}: the training state has {name} {value}, more than the {limits[name]} the run's "
                           "config allows; it cannot be resumed")


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
                record = parse_json(line.decode("utf-8", errors="replace"), path)
            except RunError:
                continue
            yield record
