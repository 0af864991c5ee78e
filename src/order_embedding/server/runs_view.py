"""The run folders as the runs table and the training plots see them: summaries and metric logs.

Summaries and logs are re-read as runs change while they train; a parsed log is kept
while its file keeps the same size and modification time.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .. import runs
from ..optim import scheduled_lr
from .cache import LRU
from .errors import NotFound

#: Hyperparameters shown in the runs table, when a run records them.
SHOWN_OPTIONS = ("method", "dim", "dim_word", "dim_image", "margin", "lrate", "batch_size", "max_epochs",
                 "max_violation", "backbone", "encoder", "abs", "data", "cnn")
METRIC_KEYS = ("R@1", "R@5", "R@10", "medr", "meanr")
#: Parsed metric logs kept.
MAX_LOGS = 64
#: The final figures a run folder may record (a JSON object), and the most bytes read of it.
RESULTS = "results.json"
MAX_RESULTS_BYTES = 16 * 2**20
#: Record times from this on are wall-clock times (seconds since 1970); smaller ones count from the run's start.
WALL_CLOCK = 1e9
#: Where Linux lists the file locks held on the machine (absent elsewhere).
PROC_LOCKS = Path("/proc/locks")


def _number(value: Any) -> int | float | None:
    """``value`` when it is a finite number (integers stay integers), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value
    return value if math.isfinite(value) else None


def _metrics(value: Any) -> dict[str, float | None] | None:
    """The five ranking metrics of a record's direction, or None when absent."""
    if not isinstance(value, dict):
        return None
    return {k: _number(value.get(k)) for k in METRIC_KEYS}


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced: inode, size, modification time (None when absent)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_log(run_dir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The run's metric records grouped by model name (``""`` for single-model runs), cleaned for plotting.

    Train points carry ``examples``, ``uidx``, ``epoch``, ``time``, ``loss`` and ``lr``; validation points
    carry ``examples``, ``uidx``, ``epoch``, ``time``, ``split``, ``t2i``/``i2t`` metrics,
    ``score``, ``dev_accuracy`` and ``best``, each None when the record lacks it.
    Lines that are not JSON objects with an ``event`` are ignored.
    """
    return read_records(run_dir)[0]


def read_records(run_dir: Path) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Any]]:
    """:func:`read_log`'s groups, and the log's facts: the first and last record times (``start``, ``end``)
    and the ``finished`` record (None until the run ends normally)."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    facts: dict[str, Any] = {"start": None, "end": None, "finished": None}
    for rec in runs.read_metrics(run_dir):
        if not isinstance(rec, dict):
            continue
        t = _number(rec.get("time"))
        if t is not None:
            facts["start"] = t if facts["start"] is None else min(facts["start"], t)
            facts["end"] = t if facts["end"] is None else max(facts["end"], t)
        if rec.get("event") == "finished":
            facts["finished"] = {k: v for k, v in rec.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if rec.get("event") not in ("train", "valid"):
            continue
        model = rec.get("model")
        name = model if isinstance(model, str) else ""
        group = groups.setdefault(name, {"train": [], "valid": []})
        point: dict[str, Any] = {k: _number(rec.get(k)) for k in ("examples", "uidx", "epoch", "time")}
        if point["examples"] is None:
            continue
        if rec["event"] == "train":
            point["loss"] = _number(rec.get("loss"))
            point["lr"] = _number(rec.get("lr"))
            group["train"].append(point)
        else:
            point.update(split=str(rec.get("split", "dev")), t2i=_metrics(rec.get("t2i")), i2t=_metrics(rec.get("i2t")),
                         score=_number(rec.get("score")), dev_accuracy=_number(rec.get("dev_accuracy")),
                         best=bool(rec.get("best", False)))
            group["valid"].append(point)
    return groups, facts


def dev_score(p: dict[str, Any]) -> float:
    """A validation point's score: its recorded ``score`` (R@1+R@5+R@10 of t2i), its dev accuracy,
    or R@1+R@5+R@10 of t2i; -inf when it has none of them."""
    for v in (p["score"], p["dev_accuracy"]):
        if v is not None:
            return v
    t = p["t2i"] or {}
    parts = [t.get(k) for k in ("R@1", "R@5", "R@10")]
    return float(sum(x for x in parts if x is not None)) if all(x is not None for x in parts) else -math.inf


def _best(valid: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best validation point: the highest :func:`dev_score`."""
    scored = [p for p in valid if dev_score(p) > -math.inf]
    return max(scored, key=dev_score) if scored else None


def lock_held(path: Path) -> bool:
    """Whether some process holds a ``flock`` on ``path`` (a run's ``.lock`` while it trains).

    Read from :data:`PROC_LOCKS` where the system lists its locks, so that looking never takes the
    lock (a trainer starting at that moment would find it taken); elsewhere, a non-blocking
    shared lock tried and released at once.
    """
    try:
        st = path.stat()
    except OSError:
        return False
    if PROC_LOCKS.exists():
        ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        try:
            text = PROC_LOCKS.read_text()
        except OSError:
            return False
        return any(line.split()[1:2] == ["FLOCK"] and ident in line.split() for line in text.splitlines())
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def flat_options(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config section as ``{"a.b": value}`` with nested objects flattened (lists and empty objects kept whole)."""
    if not isinstance(value, dict) or (not value and prefix):
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(flat_options(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """A section of a run's config (``model``, ``train``), empty when absent or not an object."""
    value = cfg.get(name)
    return value if isinstance(value, dict) else {}


def run_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """Every option that defines a run, flattened: for caption-image runs the model's and training options
    (``cnn`` left out when the images were read as pixels by a backbone, since no features were used);
    for other kinds every section of the config but ``kind``."""
    if cfg.get("kind", "caption-image") != "caption-image":
        return flat_options({k: v for k, v in cfg.items() if k != "kind"})
    merged = flat_options({**section(cfg, "model"), **section(cfg, "train")})
    if merged.get("backbone"):
        merged.pop("cnn", None)
    return dict(sorted(merged.items()))


def lr_changes(train: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs at which the learning rate schedule (``lrate`` and ``lr_update``) changes the rate."""
    lr, every, epochs = _number(train.get("lrate")), _number(train.get("lr_update")), _number(train.get("max_epochs"))
    if lr is None or not isinstance(every, int) or epochs is None or every < 1:
        return []
    return [{"epoch": e, "lr": scheduled_lr(lr, every, e)} for e in range(every, int(epochs), every)]


class RunFolders:
    """The run folders under ``runs_dir`` (or ``runs_dir`` itself when it is one run)."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        if not self.runs_dir.is_dir():
            raise ValueError(f"{self.runs_dir}: runs folder not found")
        self._logs = LRU(MAX_LOGS)
        self._configs = LRU(MAX_LOGS)
        self._results = LRU(MAX_LOGS)
        self._listing: tuple[Any, dict[str, Path]] | None = None

    def run_dirs(self) -> dict[str, Path]:
        """Run folders by id: the sub-folders of the runs folder (or the folder itself when it is one run),
        listed again when the folder changes."""
        stamp = file_stamp(self.runs_dir)
        if self._listing is not None and self._listing[0] == stamp:
            return self._listing[1]
        found = self._list()
        self._listing = (stamp, found)
        return found

    def _list(self) -> dict[str, Path]:
        if os.path.lexists(self.runs_dir / runs.CONFIG) or os.path.lexists(self.runs_dir / runs.METRICS):
            return {self.runs_dir.name: self.runs_dir}
        try:
            children = sorted(p for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError as e:
            raise ValueError(f"{self.runs_dir}: cannot list runs ({e})") from None
        return {p.name: p for p in children}

    def run_dir(self, run_id: str) -> Path:
        """The folder of one run; unknown ids raise :class:`NotFound`."""
        found = self.run_dirs().get(run_id)
        if found is None:
            raise NotFound(f"no run named {run_id!r}")
        return found

    def config(self, run_id: str) -> dict[str, Any]:
        """A run's ``config.json``; a missing, malformed or unreadable one raises :class:`runs.RunError`."""
        path = self.run_dir(run_id) / runs.CONFIG
        stamp = file_stamp(path)
        hit = self._configs.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        cfg = runs.load_config(path)
        if not isinstance(cfg, dict):
            raise runs.RunError(f"{path}: expected a JSON object")
        self._configs.put(path, (stamp, cfg))
        return cfg

    def results(self, run_id: str) -> dict[str, Any] | None:
        """A run's ``results.json`` (None when it has none), read again only when the file changed;
        a malformed one raises :class:`runs.RunError`."""
        path = self.run_dir(run_id) / RESULTS
        stamp = file_stamp(path)
        if stamp is None:
            return None
        hit = self._results.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        found = json.loads(runs.read_regular(path, MAX_RESULTS_BYTES, "results file").decode("utf-8", "replace"))
        if not isinstance(found, dict):
            raise runs.RunError(f"{path}: expected a JSON object")
        self._results.put(path, (stamp, found))
        return found

    def _records(self, run_dir: Path) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[str, Any]]:
        """:func:`read_records` of a run, parsed again only when ``metrics.jsonl`` changed."""
        stamp = file_stamp(run_dir / runs.METRICS)
        hit = self._logs.get(run_dir)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        parsed = read_records(run_dir)
        self._logs.put(run_dir, (stamp, parsed))
        return parsed

    def log(self, run_dir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """:func:`read_log` of a run, parsed again only when ``metrics.jsonl`` changed."""
        return self._records(run_dir)[0]

    def summary(self, run_id: str) -> dict[str, Any]:
        """One row of the runs table: kind, hyperparameters, progress and best validation point, or the error."""
        run_dir = self.run_dir(run_id)
        row: dict[str, Any] = {"id": run_id, "path": run_id if run_dir != self.runs_dir else ".", "ok": True,
                               "error": None, "kind": None, "hyperparameters": {}, "models": [], "best": None,
                               "updates": None, "examples": None, "has_model": (run_dir / runs.BEST).is_file(),
                               "searchable": False, "task": None, "status": None, "start": None, "duration": None,
                               "best_score": None, "options": {}, "lr_changes": [], "has_results": False}
        try:
            row["status"] = "training" if lock_held(run_dir / runs.LOCK) else "stopped"
            cfg = self.config(run_id)
            kind = cfg.get("kind", "caption-image")
            row["task"] = row["kind"] = kind if isinstance(kind, str) else str(kind)
            row["options"] = run_options(cfg)
            train, model = section(cfg, "train"), section(cfg, "model")
            if row["kind"] == "caption-image":
                if not model:
                    raise runs.RunError(f"{run_dir / runs.CONFIG}: no 'model' section")
                merged = {**model, **train}
                row["hyperparameters"] = {k: merged[k] for k in SHOWN_OPTIONS if k in merged}
                if merged.get("backbone"):
                    row["hyperparameters"].pop("cnn", None)
                row["lr_changes"] = lr_changes(train)
            else:
                row["hyperparameters"] = {f"{m}.{k}": v for m, opts in train.items() if isinstance(opts, dict)
                                          for k, v in opts.items() if isinstance(v, (int, float, str, bool)) and v is not None}
            log, facts = self._records(run_dir)
            if facts["finished"] is not None and row["status"] != "training":
                row["status"] = "finished"
            if facts["start"] is not None and facts["start"] >= WALL_CLOCK:
                row["start"], row["duration"] = facts["start"], facts["end"] - facts["start"]
            row["models"] = sorted(log)
            bests = {name: _best(g["valid"]) for name, g in log.items()}
            row["best"] = {name: b for name, b in bests.items() if b is not None} or None
            row["best_score"] = {name: dev_score(b) for name, b in row["best"].items()} if row["best"] else None
            points = [p for g in log.values() for p in g["train"] + g["valid"]]
            if points:
                row["updates"] = max((p["uidx"] or 0) for p in points)
                row["examples"] = max(p["examples"] for p in points)
            row["searchable"] = row["task"] == "caption-image" and row["has_model"]
            results = self.results(run_id)
            row["has_results"] = results is not None
            if row["duration"] is None and results is not None:
                row["duration"] = _number(results.get("seconds"))
            if results is not None and isinstance(results.get("kind"), str):
                row["kind"] = results["kind"]
        except Exception as e:  # one unreadable run is an error row, never a failed listing
            row.update(ok=False, searchable=False, error=str(e) or type(e).__name__)
        return row

    def series(self, run_id: str) -> dict[str, Any]:
        """A run's plotted series (see :func:`read_log`), or its error."""
        run_dir = self.run_dir(run_id)
        try:
            cfg = self.config(run_id)
            kind = cfg.get("kind", "caption-image")
            train = section(cfg, "train")
            return {"id": run_id, "kind": kind, "error": None, "series": self.log(run_dir),
                    "lr_changes": lr_changes(train) if kind == "caption-image" else []}
        except (runs.RunError, OSError, ValueError) as e:
            try:
                series = self.log(run_dir)
            except (runs.RunError, OSError, ValueError):
                series = {}
            return {"id": run_id, "kind": None, "error": str(e), "series": series, "lr_changes": []}
