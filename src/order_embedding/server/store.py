"""What the server knows about a folder of runs: summaries, metric logs, models, embeddings and retrieval lists.

Summaries and logs are re-read as runs change (see :mod:`.runs_view`); loaded models
(:mod:`.models`), data splits (:mod:`.splits`), split embeddings and retrieval lists
are cached per run and split, and dropped when the run's files or the data change.
Loading and encoding run on a bounded pool of workers (:mod:`.jobs`): requests that
need the same preparation wait for one job, and a burst queues rather than
multiplying memory. Listing a run starts preparing its ``test`` split in the
background, so that its first search does not wait for the encoding.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from .. import runs
from ..data import Split
from ..data.shapes_truth import Claim, is_true_of, load_scenes, parse_caption
from ..evaluation import recall_metrics, retrieval_lists
from ..inference import (
    compute_errors,
    encode_images,
    encode_sentences,
    split_images,
    split_source,
)
from ..measures import exact_topk
from .errors import NotFound, Unavailable
from .indexes import IndexShelf
from .jobs import WORKERS, Jobs
from .models import MAX_MODELS, CachedModel, ModelCache, model_stamp
from .paths import PathView, safe_path
from .queries import MAX_QUERY_CHARS, Batcher, tokens
from .runs_view import RunFolders
from .splits import MAX_SPLITS, SplitCache

__all__ = ["MAX_K", "MAX_MODELS", "MAX_QUERY_CHARS", "MAX_SPLITS", "NotFound", "RunStore", "Unavailable", "safe_path"]

#: Largest number of results one search or listing returns.
MAX_K = 100
#: Length of the top lists of the browser (the model's top 10).
TOP_K = 10
#: The split prepared in the background when a run is listed (the pages' default).
DEFAULT_SPLIT = "test"
#: The shapes world's scene descriptions, in a data folder: what its captions can be checked against.
SHAPES_JSON = "dataset_shapes.json"


def protocol(split_name: str, n_images: int) -> str:
    """How figures over a whole split are computed, in words (the paper's "5K" when it has 5,000 images)."""
    five_k = " (the 5K protocol)" if n_images == 5000 else ""
    return f"{split_name} split: all {n_images:,} images ranked at once, one fold{five_k}"


def shapes_truth(data_dir: Path, split: Split, split_name: str) -> dict[str, Any] | None:
    """Each caption's claim and each image's objects when the data set is a shapes world whose scene file
    matches the split (captions in the same order), else None: the truth of any caption about any image."""
    path = data_dir / SHAPES_JSON
    if not path.is_file():
        return None
    try:
        captions, scenes = load_scenes(path, split_name)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if captions != list(split.captions) or len(scenes) != split.n_images:
        return None
    claims: list[Claim | None] = []
    for c in split.captions:
        try:
            claims.append(parse_caption(c))
        except ValueError:
            claims.append(None)
    return {"claims": claims, "scenes": scenes}


def true_of(truth: dict[str, Any] | None, claim: Claim | None, image: int) -> bool | None:
    """Whether a caption's claim holds in an image's scene; None when there is no truth to judge by."""
    if truth is None or claim is None:
        return None
    return is_true_of(claim, truth["scenes"][image])
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class RunStore:
    """Runs under ``runs_dir`` and their data, as the web app sees them."""

    def __init__(self, runs_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 image_root: str | os.PathLike | None = None, device: str = "cpu", max_models: int = MAX_MODELS,
                 max_splits: int = MAX_SPLITS, indexes: Sequence[str | os.PathLike] = (),
                 workers: int = WORKERS, prepare: bool = True) -> None:
        if max_models < 1 or max_splits < 1:
            raise ValueError(f"max_models and max_splits must be at least 1, got {max_models} and {max_splits}")
        self.folders = RunFolders(runs_dir)
        self.runs_dir = self.folders.runs_dir
        self.data_dir = Path(data_dir) if data_dir is not None else None
        if self.data_dir is not None and not self.data_dir.exists():
            raise ValueError(f"{self.data_dir}: data folder not found")
        self.image_root = Path(image_root).resolve() if image_root is not None else None
        if self.image_root is not None and not self.image_root.is_dir():
            raise ValueError(f"{image_root}: image root is not a folder")
        self.device = device
        self.max_models = max_models
        self.prepare_listed = prepare
        self.jobs = Jobs(workers)
        self.models = ModelCache(device, max_models)
        self.splits = SplitCache(max_splits)
        self.shelf = IndexShelf(indexes, self.jobs, device)
        given = os.path.normpath(str(runs_dir))
        label = given if not os.path.isabs(given) and given != "." else self.runs_dir.resolve().name or "runs"
        roots = [(self.runs_dir, label)]
        roots += [(p, p.resolve().name) for p in (self.data_dir, self.image_root) if p is not None]
        roots += [(index.path, name) for name, index in self.shelf.indexes.items()]
        self.view = PathView(roots)
        self._listed: dict[str, Any] = {}

    @property
    def _models(self):
        """The loaded models by run id, least recently used first."""
        return self.models.lru.entries

    @property
    def _splits(self):
        """The loaded splits, least recently used first."""
        return self.splits.lru.entries

    def close(self) -> None:
        """Drop queued preparations."""
        self.jobs.close()

    # ------------------------------------------------------------------ runs

    def run_dirs(self) -> dict[str, Path]:
        """Run folders by id."""
        return self.folders.run_dirs()

    def run_dir(self, run_id: str) -> Path:
        """The folder of one run; unknown ids raise :class:`NotFound`."""
        return self.folders.run_dir(run_id)

    def config(self, run_id: str) -> dict[str, Any]:
        """A run's ``config.json``; a missing, malformed or unreadable one raises :class:`runs.RunError`."""
        return self.folders.config(run_id)

    def summary(self, run_id: str) -> dict[str, Any]:
        """One row of the runs table (see :meth:`RunFolders.summary`), with where its search stands."""
        row = self.folders.summary(run_id)
        row["prepared"] = self._state(run_id, DEFAULT_SPLIT) if row["searchable"] else None
        return row

    def summaries(self) -> list[dict[str, Any]]:
        """Rows of every run; the first listing of a searchable run starts preparing its test split."""
        rows = [self.summary(r) for r in self.run_dirs()]
        if self.prepare_listed:
            started = 0
            for row in rows:
                if not row["searchable"] or started >= self.max_models:
                    continue
                started += 1
                stamp = model_stamp(self.run_dir(row["id"]))
                if self._listed.get(row["id"]) != stamp:
                    self._listed[row["id"]] = stamp
                    self.prepare(row["id"], DEFAULT_SPLIT)
                    row["prepared"] = self._state(row["id"], DEFAULT_SPLIT)
        return rows

    def log(self, run_id: str) -> dict[str, Any]:
        """A run's plotted series, or its error."""
        return self.folders.series(run_id)

    def results(self, run_id: str) -> dict[str, Any]:
        """A run's recorded final figures (``results.json``, read once per change of the file)."""
        found = self.folders.results(run_id)
        if found is None:
            raise NotFound(f"run {run_id!r} records no results.json")
        kind = found.get("kind") if isinstance(found.get("kind"), str) else self.config(run_id).get("kind", "caption-image")
        return {"run": run_id, "kind": kind, "results": found}

    # ------------------------------------------------------------------ models and data

    def _searchable(self, run_id: str) -> Path:
        """The run's folder when it is a caption-image run with a checkpoint, else :class:`Unavailable`."""
        run_dir = self.run_dir(run_id)
        cfg = self.config(run_id)
        if cfg.get("kind", "caption-image") != "caption-image":
            raise Unavailable(f"run {run_id!r} is a {cfg.get('kind')!r} run: it has no caption or image search")
        if not os.path.lexists(run_dir / runs.BEST):
            raise Unavailable(f"run {run_id!r} has no {runs.BEST} yet")
        return run_dir

    def model(self, run_id: str) -> CachedModel:
        """The run's loaded model, reloaded (and its caches dropped) when its checkpoint changes."""
        run_dir = self._searchable(run_id)
        return self.models.peek(run_id, run_dir) or self.jobs.run(("model", run_id),
                                                                  lambda: self.models.load(run_id, run_dir))

    def model_job(self, run_id: str) -> Future | None:
        """None when the run's model is loaded, otherwise the job loading it."""
        run_dir = self._searchable(run_id)
        if self.models.peek(run_id, run_dir) is not None:
            return None
        return self.jobs.submit(("model", run_id), lambda: self.models.load(run_id, run_dir))

    def _split_source(self, run_id: str, name: str) -> tuple[tuple, Path, str, str | None]:
        """The cache key, data folder, features name and image root of a run's split ``name``."""
        if not _SPLIT_NAME.match(name or ""):
            raise ValueError(f"bad split name {name!r}")
        train = self.config(run_id).get("train")
        try:
            data_dir, cnn, root = split_source(train if isinstance(train, dict) else {}, self.data_dir,
                                               image_root=self.image_root, run_dir=self.run_dir(run_id))
        except ValueError as e:  # no data set recorded, or not found
            raise Unavailable(f"run {run_id!r}: {e}") from None
        return (str(data_dir.resolve()), name, root, cnn), data_dir, cnn, root

    def split(self, run_id: str, name: str) -> Split:
        """Split ``name`` of the run's data set (``--data`` when given, otherwise the one the run trained on)."""
        key, data_dir, cnn, root = self._split_source(run_id, name)
        return self.splits.peek(key, data_dir) or self.jobs.run(
            ("split",) + key, lambda: self.splits.load(key, data_dir, name, cnn, root))

    def _hit(self, run_id: str, split_name: str) -> dict[str, Any] | None:
        """The prepared embeddings and lists of a run's split when they are current, without loading anything."""
        cached = self.models.peek(run_id, self.run_dir(run_id))
        hit = cached.splits.get(split_name) if cached is not None else None
        if hit is None:
            return None
        key, data_dir, _, _ = self._split_source(run_id, split_name)
        return hit if self.splits.peek(key, data_dir) is hit["split"] else None

    def _build(self, run_id: str, split_name: str) -> dict[str, Any]:
        """Embeddings of a split under the run's model, with ranks and top-10 lists both ways (run by a worker)."""
        cached = self.model(run_id)
        split = self.split(run_id, split_name)
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
        _, data_dir, _, _ = self._split_source(run_id, split_name)
        hit = {"split": split, "s": s, "im": im, "lists": lists, "captions_of": captions_of,
               "metrics": {d: recall_metrics(lists[d]["ranks"]) for d in ("t2i", "i2t")},
               "truth": shapes_truth(data_dir, split, split_name)}

        def search(texts: list[tuple[str, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
            """The top images of several typed queries, encoded and scored together (each its own ``k``)."""
            errors, top = exact_topk(encode_sentences(model, [t for t, _ in texts]), im, model.config.method,
                                     max(k for _, k in texts))  # streamed top-k, ties to the lower index
            return [(e[:k], i[:k]) for (_, k), e, i in zip(texts, errors, top)]

        hit["search"] = Batcher(search)
        cached.splits[split_name] = hit
        return hit

    def retrieval(self, run_id: str, split_name: str) -> dict[str, Any]:
        """Embeddings of a split under the run's model, with ranks and top-10 lists both ways (cached)."""
        self.model(run_id)  # the run's kind and checkpoint are checked before the data
        return self._hit(run_id, split_name) or self.jobs.run(("retrieval", run_id, split_name),
                                                              lambda: self._build(run_id, split_name))

    def prepare(self, run_id: str, split_name: str) -> Future | None:
        """None when the run's split is ready for search, otherwise the job preparing it (started if need be).

        What can be refused without loading anything (an unknown run, a bad or unknown
        split name, a run of another kind, no data set) is refused here, at once.
        """
        if self._hit(run_id, split_name) is not None:
            return None
        self._searchable(run_id)
        _, data_dir, _, _ = self._split_source(run_id, split_name)
        self.splits.check_name(data_dir, split_name)
        return self.jobs.submit(("retrieval", run_id, split_name), lambda: self._build(run_id, split_name))

    def prepare_split(self, run_id: str, split_name: str) -> Future | None:
        """None when the run's split is loaded, otherwise the job loading it."""
        key, data_dir, cnn, root = self._split_source(run_id, split_name)
        if self.splits.peek(key, data_dir) is not None:
            return None
        self.splits.check_name(data_dir, split_name)
        return self.jobs.submit(("split",) + key, lambda: self.splits.load(key, data_dir, split_name, cnn, root))

    def _state(self, run_id: str, split_name: str) -> dict[str, Any]:
        """Where the search of a run's split stands: ``ready``, ``preparing``, ``failed`` (with the error) or ``not started``."""
        key = ("retrieval", run_id, split_name)
        try:
            ready = self._hit(run_id, split_name) is not None
        except (NotFound, Unavailable, runs.RunError, ValueError, OSError) as e:
            return {"split": split_name, "state": "failed", "error": str(e)}
        if ready:
            return {"split": split_name, "state": "ready", "error": None}
        if self.jobs.running(key):
            return {"split": split_name, "state": "preparing", "error": None}
        failure = self.jobs.failure(key)
        return {"split": split_name, "state": "failed" if failure else "not started", "error": failure}

    # ------------------------------------------------------------------ queries

    def curves(self, run_id: str, split_name: str) -> dict[str, Any]:
        """For K = 1..N, the fraction of queries whose correct item ranks <= K, both directions, with metrics."""
        r = self.retrieval(run_id, split_name)
        out: dict[str, Any] = {"run": run_id, "split": split_name, "method": self.model(run_id).model.config.method,
                               "protocol": protocol(split_name, r["split"].n_images)}
        for d, n in (("t2i", r["split"].n_images), ("i2t", r["split"].n_captions)):
            ranks = r["lists"][d]["ranks"]
            counts = np.bincount(ranks, minlength=n)[:n]
            out[d] = {"queries": int(len(ranks)), "candidates": n, "metrics": r["metrics"][d],
                      "recall": (np.cumsum(counts) / max(1, len(ranks))).round(6).tolist()}
        return out

    def search_text(self, run_id: str, split_name: str, query: str, k: int) -> dict[str, Any]:
        """The ``k`` images of the split with the lowest error under the model for a typed sentence."""
        model = self.model(run_id).model
        text, unknown = tokens(model, query)
        r = self.retrieval(run_id, split_name)
        errors, top = r["search"]((text, k))
        claim = None
        if r["truth"] is not None:
            try:
                claim = parse_caption(text)
            except ValueError:  # a sentence outside the shapes world's words: no truth to judge by
                claim = None
        return {"run": run_id, "split": split_name, "query": query, "tokens": text.split(), "unknown": unknown,
                "protocol": protocol(split_name, r["split"].n_images), "judged": claim is not None,
                "results": [{"image": int(i), "error": float(e), "true": true_of(r["truth"], claim, int(i))}
                            for e, i in zip(errors, top)]}

    def probe(self, run_id: str, a: str, b: str | None, split_name: str = DEFAULT_SPLIT,
              image: int | None = None) -> dict[str, Any]:
        """The model's errors for typed sentences: ``E(a, b)`` and ``E(b, a)`` of two sentences (the error of
        placing ``a`` above ``b``, the caption's side of caption-image pairs, and the reverse), and with an image of
        a split ``E(a, image)`` with the caption's rank among the split's captions for that image."""
        if (b is None) == (image is None):
            raise ValueError("give exactly one of b (a second sentence) or image (an image index)")
        model = self.model(run_id).model
        text_a, unknown_a = tokens(model, a)
        out: dict[str, Any] = {"run": run_id, "method": model.config.method,
                               "a": {"text": a, "tokens": text_a.split(), "unknown": unknown_a}}
        if b is not None:
            text_b, unknown_b = tokens(model, b)
            v = encode_sentences(model, [text_a, text_b])
            errors = compute_errors(model, v, v)
            out.update(b={"text": b, "tokens": text_b.split(), "unknown": unknown_b},
                       E_ab=float(errors[0, 1]), E_ba=float(errors[1, 0]))
            return out
        assert image is not None
        r = self.retrieval(run_id, split_name)
        if not 0 <= image < r["split"].n_images:
            raise NotFound(f"split {split_name!r} has images 0..{r['split'].n_images - 1}, not {image}")
        im = r["im"][image : image + 1]
        e = float(compute_errors(model, encode_sentences(model, [text_a]), im)[0, 0])
        split_errors = compute_errors(model, r["s"], im)[:, 0]
        claim = None
        if r["truth"] is not None:
            try:
                claim = parse_caption(text_a)
            except ValueError:
                claim = None
        out.update(split=split_name, image=image, E_a_image=e, rank=int((split_errors < e).sum()) + 1,
                   captions=int(len(split_errors)), own_captions=[{"text": r["split"].captions[c],
                                                                   "error": float(split_errors[c])}
                                                                  for c in r["captions_of"][image]],
                   true=true_of(r["truth"], claim, image))
        return out

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
        truth = r["truth"]
        return {"run": run_id, "split": split_name, "image": image, "judged": truth is not None,
                "protocol": protocol(split_name, n),
                "results": [{"caption": int(c), "text": r["split"].captions[c], "error": float(errors[c]),
                             "correct": int(c) in own,
                             "true": true_of(truth, truth["claims"][int(c)] if truth else None, image)}
                            for c in top]}

    def browse(self, run_id: str, split_name: str, direction: str, offset: int, limit: int,
               failures: bool, image_url: Callable[[int], str]) -> dict[str, Any]:
        """A page of queries with their ground truth, the model's top 10 (errors) and the 1-based rank of the right item."""
        r = self.retrieval(run_id, split_name)
        split = r["split"]
        lists = r["lists"][direction]
        ranks = lists["ranks"]
        queries = np.flatnonzero(ranks > 0) if failures else np.arange(len(ranks))
        page = queries[offset : offset + limit]
        truth = r["truth"]
        items = []
        for q in page:
            q = int(q)
            if direction == "t2i":
                paired = int(split.cap2img[q])
                items.append({"query": q, "caption": split.captions[q], "image": paired, "image_url": image_url(paired),
                              "rank": int(ranks[q]) + 1,
                              "top": [{"image": int(i), "error": float(e), "image_url": image_url(int(i)),
                                       "correct": int(i) == paired,
                                       "true": true_of(truth, truth["claims"][q] if truth else None, int(i))}
                                      for i, e in zip(lists["top"][q], lists["errors"][q])]})
            else:
                own = r["captions_of"][q]
                items.append({"query": q, "image": q, "image_url": image_url(q),
                              "captions": [split.captions[c] for c in own], "rank": int(ranks[q]) + 1,
                              "top": [{"caption": int(c), "text": split.captions[int(c)], "error": float(e),
                                       "correct": int(c) in own,
                                       "true": true_of(truth, truth["claims"][int(c)] if truth else None, q)}
                                      for c, e in zip(lists["top"][q], lists["errors"][q])]})
        return {"run": run_id, "split": split_name, "direction": direction, "total": int(len(queries)),
                "protocol": protocol(split_name, split.n_images), "judged": truth is not None,
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

    # ------------------------------------------------------------------ indexes

    def index_summaries(self) -> list[dict[str, Any]]:
        """The on-disk indexes the server searches (see :meth:`IndexShelf.summaries`)."""
        return self.shelf.summaries()

    def search_index(self, name: str, query: str, k: int) -> dict[str, Any]:
        """The ``k`` images of an on-disk index with the lowest error for a typed sentence (exact, streamed)."""
        return self.shelf.search(name, query, k)

    def index_image_file(self, name: str, image: int) -> Path | None:
        """The file of an index's image when the index lists files and it lies under the image root, else None."""
        return self.shelf.image_file(name, image, self.image_root)
