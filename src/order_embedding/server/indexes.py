"""The on-disk image indexes a server was started with: listing, sentence search and their image files."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..index import Index, IndexFileError
from ..inference import LoadedModel, encode_sentences
from .errors import NotFound
from .jobs import Jobs
from .queries import tokens


class IndexShelf:
    """Indexes by folder name, opened (and so validated) when the server starts."""

    def __init__(self, paths: Sequence[str | os.PathLike], jobs: Jobs, device: str = "cpu") -> None:
        self.jobs = jobs
        self.device = device
        self.indexes: dict[str, Index] = {}
        for path in paths:
            try:
                opened = Index(path)
            except IndexFileError as e:
                raise ValueError(str(e)) from None
            if opened.path.name in self.indexes:
                raise ValueError(f"two indexes are named {opened.path.name!r}; give them different folder names")
            self.indexes[opened.path.name] = opened

    def get(self, name: str) -> Index:
        """The index named ``name``; unknown names raise :class:`NotFound`."""
        index = self.indexes.get(name)
        if index is None:
            raise NotFound(f"no index named {name!r}")
        return index

    def summaries(self) -> list[dict[str, Any]]:
        """Name, size, measure, dtype, whether exact search uses bounds, the run, whether it lists files."""
        return [{"name": name, "images": len(index), "dim": index.meta["dim"], "method": index.method,
                 "dtype": index.meta["dtype"], "bounded": index.bounded(), "run": index.meta.get("run"),
                 "has_files": index.image_files() is not None} for name, index in self.indexes.items()]

    def model(self, name: str) -> LoadedModel:
        """The model an index was built with, loaded once by a worker."""
        index = self.get(name)
        return self.jobs.run(("index-model", name), lambda: index.model(self.device))

    def ready(self, name: str):
        """None when the index's model is loaded, otherwise the job loading it."""
        index = self.get(name)
        if index.model_loaded:
            return None
        return self.jobs.submit(("index-model", name), lambda: index.model(self.device))

    def search(self, name: str, query: str, k: int) -> dict[str, Any]:
        """The ``k`` images of an index with the lowest error for a typed sentence (exact, streamed)."""
        index = self.get(name)
        model = self.model(name)
        text, unknown = tokens(model, query)
        errors, top = index.search_vectors(encode_sentences(model, [text]), k)
        return {"index": name, "query": query, "tokens": text.split(), "unknown": unknown,
                "results": [{"image": int(i), "error": float(e)} for e, i in zip(errors[0], top[0])]}

    def image_file(self, name: str, image: int, image_root: Path | None) -> Path | None:
        """The file of an index's image when the index lists files and it is a regular file under ``image_root``."""
        index = self.get(name)
        if not 0 <= image < len(index):
            raise NotFound(f"index {name!r} has images 0..{len(index) - 1}, not {image}")
        files = index.image_files()
        if files is None or image_root is None:
            return None
        found = Path(files[image]).resolve()
        return found if found.is_file() and found.is_relative_to(image_root) else None
