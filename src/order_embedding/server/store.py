"""What the server knows about a folder of runs: summaries, metric logs, models, embeddings and retrieval lists.

Everything is read from the run folders on demand. Summaries and logs are re-read on
every request (runs change while they train); loaded models, split embeddings and
retrieval lists are cached per run and split, and dropped when the run's
``model.safetensors`` changes. At most ``max_models`` models (with their
embeddings) and ``max_splits`` data splits stay loaded; the least recently used
ones are dropped first.
"""
from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import runs
from ..data import DataError, Split, load_split, resolve_data_dir
from ..evaluation import recall_metrics, retrieval_lists
from ..index import Index, IndexFileError
from ..inference import (
    LoadedModel,
    compute_errors,
    encode_images,
    encode_sentences,
    load_model,
    split_images,
)
from ..measures import exact_topk

#: Longest accepted search query, in characters.
MAX_QUERY_CHARS = 500
#: Largest number of results one search or listing returns.
MAX_K = 100
#: Length of the top lists of the browser (the model's top 10).
TOP_K = 10
#: Hyperparameters shown in the runs table, when a run records them.
SHOWN_OPTIONS = ("method", "dim", "dim_word", "dim_image", "margin", "lrate", "batch_size", "max_epochs",
                 "max_violation", "backbone", "encoder", "abs", "data", "cnn")
METRIC_KEYS = ("R@1", "R@5", "R@10", "medr", "meanr")
#: Run models (with their split embeddings) kept loaded by default.
MAX_MODELS = 4
#: Data splits kept loaded by default.
MAX_SPLITS = 8
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_PUNCTUATION = ".,;:!?\"'()"


class NotFound(LookupError):
    """A run, split or item that the request names does not exist."""


class Unavailable(ValueError):
    """The request is well formed but the run cannot answer it (no model, no data, wrong kind)."""


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


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


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
        name = rec.get("model") if isinstance(rec.get("model"), str) else ""
        group = groups.setdefault(name, {"train": [], "valid": []})
        point = {k: _number(rec.get(k)) for k in ("examples", "uidx", "epoch", "time")}
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
        parts = [t.get(k) for k in ("R@1", "R@5", "R@10")]
        return sum(parts) if all(x is not None for x in parts) else -math.inf
    scored = [p for p in valid if key(p) > -math.inf]
    return max(scored, key=key) if scored else None


@dataclass
class _Cached:
    """A run's loaded model and the per-split results derived from it, valid for one checkpoint mtime."""

    stamp: Any
    model: LoadedModel
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)


class RunStore:
    """Runs under ``runs_dir`` and their data, as the web app sees them."""

    def __init__(self, runs_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 image_root: str | os.PathLike | None = None, device: str = "cpu", max_models: int = MAX_MODELS,
                 max_splits: int = MAX_SPLITS, indexes: Sequence[str | os.PathLike] = ()) -> None:
        if max_models < 1 or max_splits < 1:
            raise ValueError(f"max_models and max_splits must be at least 1, got {max_models} and {max_splits}")
        self.runs_dir = Path(runs_dir)
        if not self.runs_dir.is_dir():
            raise ValueError(f"{self.runs_dir}: runs folder not found")
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.data_dir is not None and not self.data_dir.exists():
            raise ValueError(f"{self.data_dir}: data folder not found")
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        if self.image_root is not None and not self.image_root.is_dir():
            raise ValueError(f"{image_root}: image root is not a folder")
        self.device = device
        self.max_models = max_models
        self.max_splits = max_splits
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}
        self._models: OrderedDict[str, _Cached] = OrderedDict()
        self._splits: OrderedDict[tuple[str, str, str | None, str], tuple[Any, Split]] = OrderedDict()
        self.indexes: dict[str, Index] = {}
        for path in indexes:
            try:
                opened = Index(path)
            except IndexFileError as e:
                raise ValueError(str(e)) from None
            if opened.path.name in self.indexes:
                raise ValueError(f"two indexes are named {opened.path.name!r}; give them different folder names")
            self.indexes[opened.path.name] = opened

    # ------------------------------------------------------------------ runs

    def run_dirs(self) -> dict[str, Path]:
        """Run folders by id: the sub-folders of the runs folder (or the folder itself when it is one run)."""
        if (self.runs_dir / runs.CONFIG).exists() or (self.runs_dir / runs.METRICS).exists():
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
        """A run's ``config.json``; a missing or malformed one raises :class:`runs.RunError`."""
        path = self.run_dir(run_id) / runs.CONFIG
        cfg = runs.load_json(path)
        if not isinstance(cfg, dict):
            raise runs.RunError(f"{path}: expected a JSON object")
        return cfg

    def summary(self, run_id: str) -> dict[str, Any]:
        """One row of the runs table: kind, hyperparameters, progress and best validation point, or the error."""
        run_dir = self.run_dir(run_id)
        row: dict[str, Any] = {"id": run_id, "path": str(run_dir), "ok": True, "error": None, "kind": None,
                               "hyperparameters": {}, "models": [], "best": None, "updates": None,
                               "examples": None, "has_model": (run_dir / runs.BEST).is_file(), "searchable": False}
        try:
            cfg = self.config(run_id)
            kind = cfg.get("kind", "caption-image")
            row["kind"] = kind if isinstance(kind, str) else str(kind)
            train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
            model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
            if row["kind"] == "caption-image":
                if not model:
                    raise runs.RunError(f"{run_dir / runs.CONFIG}: no 'model' section")
                merged = {**model, **train}
                row["hyperparameters"] = {k: merged[k] for k in SHOWN_OPTIONS if k in merged}
            else:
                row["hyperparameters"] = {f"{m}.{k}": v for m, opts in train.items() if isinstance(opts, dict)
                                          for k, v in opts.items() if isinstance(v, (int, float, str, bool)) and v is not None}
            log = read_log(run_dir)
            row["models"] = sorted(log)
            bests = {name: _best(g["valid"]) for name, g in log.items()}
            row["best"] = {name: b for name, b in bests.items() if b is not None} or None
            points = [p for g in log.values() for p in g["train"] + g["valid"]]
            if points:
                row["updates"] = max((p["uidx"] or 0) for p in points)
                row["examples"] = max(p["examples"] for p in points)
            row["searchable"] = row["kind"] == "caption-image" and row["has_model"]
        except (runs.RunError, OSError, ValueError) as e:
            row.update(ok=False, error=str(e))
        return row

    def summaries(self) -> list[dict[str, Any]]:
        """Rows of every run."""
        return [self.summary(r) for r in self.run_dirs()]

    def log(self, run_id: str) -> dict[str, Any]:
        """A run's plotted series (see :func:`read_log`), or its error."""
        run_dir = self.run_dir(run_id)
        try:
            kind = self.config(run_id).get("kind", "caption-image")
            return {"id": run_id, "kind": kind, "error": None, "series": read_log(run_dir)}
        except (runs.RunError, OSError, ValueError) as e:
            return {"id": run_id, "kind": None, "error": str(e), "series": read_log(run_dir)}

    # ------------------------------------------------------------------ models and data

    def _key_lock(self, key: Any) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _remember(self, cache: OrderedDict, key: Any, value: Any, limit: int) -> None:
        """Store ``value`` as the most recently used entry of ``cache``, dropping the oldest beyond ``limit``."""
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > limit:
                cache.popitem(last=False)

    def _recall(self, cache: OrderedDict, key: Any) -> Any:
        """The entry of ``cache`` under ``key`` (marked most recently used), or None."""
        with self._lock:
            value = cache.get(key)
            if value is not None:
                cache.move_to_end(key)
            return value

    def model(self, run_id: str) -> _Cached:
        """The run's loaded model, reloaded (and its caches dropped) when its checkpoint changes."""
        run_dir = self.run_dir(run_id)
        cfg = self.config(run_id)
        if cfg.get("kind", "caption-image") != "caption-image":
            raise Unavailable(f"run {run_id!r} is a {cfg.get('kind')!r} run: it has no caption or image search")
        with self._key_lock(("model", run_id)):
            stamp = (_mtime(run_dir / runs.BEST), _mtime(run_dir / runs.CONFIG), _mtime(run_dir / runs.VOCAB))
            if stamp[0] is None:
                raise Unavailable(f"run {run_id!r} has no {runs.BEST} yet")
            cached = self._recall(self._models, run_id)
            if cached is None or cached.stamp != stamp:
                cached = _Cached(stamp, load_model(run_dir, device=self.device))
                self._remember(self._models, run_id, cached, self.max_models)
            return cached

    def split(self, run_id: str, name: str) -> Split:
        """Split ``name`` of the run's data set (``--data`` when given, otherwise the one the run trained on)."""
        if not _SPLIT_NAME.match(name or ""):
            raise ValueError(f"bad split name {name!r}")
        train = self.config(run_id).get("train")
        train = train if isinstance(train, dict) else {}
        if self.data_dir is not None:
            data_dir = self.data_dir
        elif isinstance(train.get("data"), str):
            try:
                data_dir = resolve_data_dir(train["data"])
            except DataError as e:
                raise Unavailable(f"run {run_id!r}: {e}; start the server with --data") from None
        else:
            raise Unavailable(f"run {run_id!r} records no data set; start the server with --data")
        cnn = train.get("cnn") if isinstance(train.get("cnn"), str) else "10crop"
        root = str(self.image_root) if self.image_root is not None else train.get("image_root")
        root = root if isinstance(root, str) else None
        key = (str(data_dir.resolve()), name, root, cnn)
        with self._key_lock(("split",) + key):
            stamp = tuple(_mtime(p) for p in sorted(data_dir.glob("*"))[:64]) if data_dir.is_dir() else _mtime(data_dir)
            hit = self._recall(self._splits, key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            try:
                split = load_split(data_dir, name, cnn=cnn, image_root=root)
            except DataError as e:
                raise NotFound(str(e)) from None
            self._remember(self._splits, key, (stamp, split), self.max_splits)
            return split

    def retrieval(self, run_id: str, split_name: str) -> dict[str, Any]:
        """Embeddings of a split under the run's model, with ranks and top-10 lists both ways (cached)."""
        cached = self.model(run_id)
        split = self.split(run_id, split_name)
        with self._key_lock(("retrieval", run_id, split_name)):
            hit = cached.splits.get(split_name)
            if hit is not None and hit["split"] is split:
                return hit
            model = cached.model
            s = encode_sentences(model, split.captions, verbose=True)
            im = encode_images(model, split_images(model, split, verbose=True), verbose=True)
            lists = retrieval_lists(s, im, split.cap2img, model.config.method, TOP_K)
            captions_of: list[list[int]] = [[] for _ in range(split.n_images)]
            for c, i in enumerate(split.cap2img):
                captions_of[int(i)].append(c)
            hit = {"split": split, "s": s, "im": im, "lists": lists, "captions_of": captions_of,
                   "metrics": {d: recall_metrics(lists[d]["ranks"]) for d in ("t2i", "i2t")}}
            cached.splits[split_name] = hit
            return hit

    # ------------------------------------------------------------------ queries

    def curves(self, run_id: str, split_name: str) -> dict[str, Any]:
        """For K = 1..N, the fraction of queries whose correct item ranks <= K, both directions, with metrics."""
        r = self.retrieval(run_id, split_name)
        out: dict[str, Any] = {"run": run_id, "split": split_name, "method": self.model(run_id).model.config.method}
        for d, n in (("t2i", r["split"].n_images), ("i2t", r["split"].n_captions)):
            ranks = r["lists"][d]["ranks"]
            counts = np.bincount(ranks, minlength=n)[:n]
            out[d] = {"queries": int(len(ranks)), "candidates": n, "metrics": r["metrics"][d],
                      "recall": (np.cumsum(counts) / max(1, len(ranks))).round(6).tolist()}
        return out

    def tokens(self, model: LoadedModel, query: str) -> tuple[str, list[str]]:
        """The query as the vocabulary's words (case and trailing punctuation fixed when that finds a word), and its unknown words."""
        words, unknown = [], []
        for raw in query.split():
            pieces = [raw.strip(_PUNCTUATION)] if raw.strip(_PUNCTUATION) else [raw]
            for w in pieces:
                known = next((c for c in (w, w.lower(), raw) if model.vocab.index(c) > 1), None)
                words.append(known or w)
                if known is None:
                    unknown.append(w)
        return " ".join(words), unknown

    def search_text(self, run_id: str, split_name: str, query: str, k: int) -> dict[str, Any]:
        """The ``k`` images of the split with the lowest error under the model for a typed sentence."""
        if not query.strip():
            raise ValueError("empty query")
        r = self.retrieval(run_id, split_name)
        model = self.model(run_id).model
        text, unknown = self.tokens(model, query)
        s = encode_sentences(model, [text])
        errors, top = exact_topk(s, r["im"], model.config.method, k)  # streamed top-k, ties to the lower index
        return {"run": run_id, "split": split_name, "query": query, "tokens": text.split(), "unknown": unknown,
                "results": [{"image": int(i), "error": float(e)} for e, i in zip(errors[0], top[0])]}

    def index_summaries(self) -> list[dict[str, Any]]:
        """The on-disk indexes the server searches: name, size, measure, whether exact search uses bounds."""
        return [{"name": name, "images": len(index), "dim": index.meta["dim"], "method": index.method,
                 "dtype": index.meta["dtype"], "bounded": index.bounded(), "run": index.meta.get("run"),
                 "has_files": index.image_files() is not None} for name, index in self.indexes.items()]

    def _index(self, name: str) -> Index:
        index = self.indexes.get(name)
        if index is None:
            raise NotFound(f"no index named {name!r}")
        return index

    def search_index(self, name: str, query: str, k: int) -> dict[str, Any]:
        """The ``k`` images of an on-disk index with the lowest error for a typed sentence (exact, streamed)."""
        if not query.strip():
            raise ValueError("empty query")
        index = self._index(name)
        with self._key_lock(("index", name)):
            model = index.model(self.device)
        text, unknown = self.tokens(model, query)
        errors, top = index.search_vectors(encode_sentences(model, [text]), k)
        return {"index": name, "query": query, "tokens": text.split(), "unknown": unknown,
                "results": [{"image": int(i), "error": float(e)} for e, i in zip(errors[0], top[0])]}

    def index_image_file(self, name: str, image: int) -> Path | None:
        """The file of an index's image when the index lists files and it lies under the image root, else None."""
        index = self._index(name)
        if not 0 <= image < len(index):
            raise NotFound(f"index {name!r} has images 0..{len(index) - 1}, not {image}")
        files = index.image_files()
        if files is None or self.image_root is None:
            return None
        found = Path(files[image]).resolve()
        return found if found.is_file() and found.is_relative_to(self.image_root) else None

    def search_image(self, run_id: str, split_name: str, image: int, k: int) -> dict[str, Any]:
        """The ``k`` captions of the split with the lowest error for one of its images."""
        r = self.retrieval(run_id, split_name)
        n = r["split"].n_images
        if not 0 <= image < n:
            raise NotFound(f"split {split_name!r} has images 0..{n - 1}, not {image}")
        model = self.model(run_id).model
        errors = compute_errors(model, r["s"], r["im"][image : image + 1])[:, 0]
        top = np.argsort(errors, kind="stable")[:k]
        own = set(r["captions_of"][image])
        return {"run": run_id, "split": split_name, "image": image,
                "results": [{"caption": int(c), "text": r["split"].captions[c], "error": float(errors[c]),
                             "correct": int(c) in own} for c in top]}

    def browse(self, run_id: str, split_name: str, direction: str, offset: int, limit: int,
               failures: bool, image_url: Callable[[int], str]) -> dict[str, Any]:
        """A page of queries with their ground truth, the model's top 10 (errors) and the 1-based rank of the right item."""
        r = self.retrieval(run_id, split_name)
        split = r["split"]
        lists = r["lists"][direction]
        ranks = lists["ranks"]
        queries = np.flatnonzero(ranks > 0) if failures else np.arange(len(ranks))
        page = queries[offset : offset + limit]
        items = []
        for q in page:
            q = int(q)
            if direction == "t2i":
                truth = int(split.cap2img[q])
                items.append({"query": q, "caption": split.captions[q], "image": truth, "image_url": image_url(truth),
                              "rank": int(ranks[q]) + 1,
                              "top": [{"image": int(i), "error": float(e), "image_url": image_url(int(i)),
                                       "correct": int(i) == truth}
                                      for i, e in zip(lists["top"][q], lists["errors"][q])]})
            else:
                own = r["captions_of"][q]
                items.append({"query": q, "image": q, "image_url": image_url(q),
                              "captions": [split.captions[c] for c in own], "rank": int(ranks[q]) + 1,
                              "top": [{"caption": int(c), "text": split.captions[int(c)], "error": float(e),
                                       "correct": int(c) in own}
                                      for c, e in zip(lists["top"][q], lists["errors"][q])]})
        return {"run": run_id, "split": split_name, "direction": direction, "total": int(len(queries)),
                "queries": int(len(ranks)), "offset": offset, "limit": limit, "failures": failures,
                "metrics": r["metrics"][direction], "items": items}

    def image_file(self, run_id: str, split_name: str, index: int) -> Path | None:
        """The file of image ``index`` of a split when it exists under the image root, otherwise None."""
        split = self.split(run_id, split_name)
        if not 0 <= index < split.n_images:
            raise NotFound(f"split {split_name!r} has images 0..{split.n_images - 1}, not {index}")
        if split.image_files is None or split.image_root is None:
            return None
        return safe_path(Path(split.image_root), split.image_files[index])


def safe_path(root: Path, relative: str) -> Path | None:
    """``root / relative`` when it is an existing file that resolves (links followed) strictly under ``root``."""
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
