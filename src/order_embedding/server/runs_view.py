"""The run folders as the runs table and the training plots see them: summaries and metric logs.

Summaries and logs are re-read as runs change while they train; a parsed log is kept
while its file keeps the same size and modification time.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .. import runs
from .cache import LRU
from .errors import NotFound

#: Hyperparameters shown in the runs table, when a run records them.
SHOWN_OPTIONS = ("method", "dim", "dim_word", "dim_image", "margin", "lrate", "batch_size", "max_epochs",
                 "max_violation", "backbone", "encoder", "abs", "data", "cnn")
METRIC_KEYS = ("R@1", "R@5", "R@10", "medr", "meanr")
#: Parsed metric logs kept.
MAX_LOGS = 64


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

    Train points carry ``examples``, ``uidx``, ``epoch``, ``loss``; validation points
    carry ``examples``, ``uidx``, ``epoch``, ``split``, ``t2i``/``i2t`` metrics,
    ``score``, ``dev_accuracy`` and ``best``, each None when the record lacks it.
    Lines that are not JSON objects with an ``event`` are ignored.
    """
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rec in runs.read_metrics(run_dir):
        if not isinstance(rec, dict) or rec.get("event") not in ("train", "valid"):
            continue
        name = rec["model"] if isinstance(rec.get("model"), str) else ""
        group = groups.setdefault(name, {"train": [], "valid": []})
        point: dict[str, Any] = {k: _number(rec.get(k)) for k in ("examples", "uidx", "epoch", "time")}
        if point["examples"] is None:
            continue
        if rec["event"] == "train":
            point["loss"] = _number(rec.get("loss"))
            group["train"].append(point)
        else:
            point.update(split=str(rec.get("split", "dev")), t2i=_metrics(rec.get("t2i")), i2t=_metrics(rec.get("i2t")),
                         score=_number(rec.get("score")), dev_accuracy=_number(rec.get("dev_accuracy")),
                         best=bool(rec.get("best", False)))
            group["valid"].append(point)
    return groups


def _best(valid: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best validation point: highest score (R@1+R@5+R@10 of t2i) or highest dev accuracy."""
    def key(p: dict[str, Any]) -> float:
        for v in (p["score"], p["dev_accuracy"]):
            if v is not None:
                return v
        t = p["t2i"] or {}
        parts = [t[k] for k in ("R@1", "R@5", "R@10") if t.get(k) is not None]
        return sum(parts) if len(parts) == 3 else -math.inf
    scored = [p for p in valid if key(p) > -math.inf]
    return max(scored, key=key) if scored else None


class RunFolders:
    """The run folders under ``runs_dir`` (or ``runs_dir`` itself when it is one run)."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        if not self.runs_dir.is_dir():
            raise ValueError(f"{self.runs_dir}: runs folder not found")
        self._logs = LRU(MAX_LOGS)
        self._configs = LRU(MAX_LOGS)
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
        cfg = runs.load_json(path)
        if not isinstance(cfg, dict):
            raise runs.RunError(f"{path}: expected a JSON object")
        self._configs.put(path, (stamp, cfg))
        return cfg

    def log(self, run_dir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """:func:`read_log` of a run, parsed again only when ``metrics.jsonl`` changed."""
        stamp = file_stamp(run_dir / runs.METRICS)
        hit = self._logs.get(run_dir)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        groups = read_log(run_dir)
        self._logs.put(run_dir, (stamp, groups))
        return groups

    def summary(self, run_id: str) -> dict[str, Any]:
        """One row of the runs table: kind, hyperparameters, progress and best validation point, or the error."""
        run_dir = self.run_dir(run_id)
        row: dict[str, Any] = {"id": run_id, "path": run_id if run_dir != self.runs_dir else ".", "ok": True,
                               "error": None, "kind": None, "hyperparameters": {}, "models": [], "best": None,
                               "updates": None, "examples": None, "has_model": (run_dir / runs.BEST).is_file(),
                               "searchable": False}
        try:
            cfg = self.config(run_id)
            kind = cfg.get("kind", "caption-image")
            row["kind"] = kind if isinstance(kind, str) else str(kind)
            train = cfg["train"] if isinstance(cfg.get("train"), dict) else {}
            model = cfg["model"] if isinstance(cfg.get("model"), dict) else {}
            if row["kind"] == "caption-image":
                if not model:
                    raise runs.RunError(f"{run_dir / runs.CONFIG}: no 'model' section")
                merged = {**model, **train}
                row["hyperparameters"] = {k: merged[k] for k in SHOWN_OPTIONS if k in merged}
            else:
                row["hyperparameters"] = {f"{m}.{k}": v for m, opts in train.items() if isinstance(opts, dict)
                                          for k, v in opts.items() if isinstance(v, (int, float, str, bool)) and v is not None}
            log = self.log(run_dir)
            row["models"] = sorted(log)
            bests = {name: _best(g["valid"]) for name, g in log.items()}
            row["best"] = {name: b for name, b in bests.items() if b is not None} or None
            points = [p for g in log.values() for p in g["train"] + g["valid"]]
            if points:
                row["updates"] = max((p["uidx"] or 0) for p in points)
                row["examples"] = max(p["examples"] for p in points)
            row["searchable"] = row["kind"] == "caption-image" and row["has_model"]
        except Exception as e:  # one unreadable run is an error row, never a failed listing
            row.update(ok=False, searchable=False, error=str(e) or type(e).__name__)
        return row

    def series(self, run_id: str) -> dict[str, Any]:
        """A run's plotted series (see :func:`read_log`), or its error."""
        run_dir = self.run_dir(run_id)
        try:
            kind = self.config(run_id).get("kind", "caption-image")
            return {"id": run_id, "kind": kind, "error": None, "series": self.log(run_dir)}
        except (runs.RunError, OSError, ValueError) as e:
            try:
                series = self.log(run_dir)
            except (runs.RunError, OSError, ValueError):
                series = {}
            return {"id": run_id, "kind": None, "error": str(e), "series": series}
