"""Run models kept loaded for search, reloaded when their files change, the least recently used dropped first."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..inference import LoadedModel, load_model
from .cache import LRU
from .errors import Unavailable
from .runs_view import file_stamp

#: Run models (with their split embeddings) kept loaded by default.
MAX_MODELS = 4


@dataclass
class CachedModel:
    """A run's loaded model and the per-split results derived from it, valid while its files keep ``stamp``."""

    stamp: Any
    model: LoadedModel
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)


def model_stamp(run_dir: Path) -> tuple:
    """The stamps of the files a loaded model comes from: checkpoint, config, vocabulary."""
    return file_stamp(run_dir / runs.BEST), file_stamp(run_dir / runs.CONFIG), file_stamp(run_dir / runs.VOCAB)


class ModelCache:
    """At most ``limit`` loaded run models, by run id."""

    def __init__(self, device: str = "cpu", limit: int = MAX_MODELS) -> None:
        self.device = device
        self.lru = LRU(limit)

    def peek(self, run_id: str, run_dir: Path) -> CachedModel | None:
        """The loaded model when it is still that of the run's files, without loading anything."""
        cached = self.lru.get(run_id)
        return cached if cached is not None and cached.stamp == model_stamp(run_dir) else None

    def load(self, run_id: str, run_dir: Path) -> CachedModel:
        """The run's loaded model, loaded again (its derived results dropped) when its files changed."""
        with self.lru.key_lock(run_id):
            stamp = model_stamp(run_dir)
            if stamp[0] is None:
                raise Unavailable(f"run {run_id!r} has no {runs.BEST} yet")
            cached = self.lru.get(run_id)
            if cached is None or cached.stamp != stamp:
                cached = CachedModel(stamp, load_model(run_dir, device=self.device))
                self.lru.put(run_id, cached)
            return cached
