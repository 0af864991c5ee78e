"""Searching an index folder: exact streamed top-k, bounded by the stored lower bounds, or FAISS candidates."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import runs
from ..data.npy import NpyRows
from ..inference import LoadedModel, encode_sentences, load_model
from ..kernels import bounds as lower_bounds
from ..kernels import gpu
from ..measures import exact_topk
from .ann import load_ann, rerank, set_search_params
from .layout import (
    BOUNDS,
    EMBEDDINGS,
    FILES,
    META,
    IndexFileError,
    check_meta,
    check_regular,
)

#: Share of a GPU's free memory an index may take to be held there between searches (else it is streamed).
DEVICE_SHARE = 0.5
#: Rows copied to the GPU at a time when an index is loaded there.
DEVICE_LOAD_ROWS = 1 << 18

#: Longest line of an index's image list, in bytes (the list may hold this much per image).
MAX_FILES_BYTES = 4096


def check_query(query: str, what: str = "query") -> str:
    """``query`` when it is a sentence with at least one word; the one rule for every search of typed text."""
    if not isinstance(query, str):
        raise ValueError(f"{what} must be a sentence, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{what} is empty: type at least one word")
    return query


class Index:
    """An index folder opened for search."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / META).is_file():
            raise IndexFileError(f"{self.path}: not an index folder (no {META})")
        try:
            meta = runs.load_json(self.path / META)
        except runs.RunError as e:
            raise IndexFileError(str(e)) from None
        self.meta = meta = check_meta(meta, self.path / META)
        self.rows = NpyRows(check_regular(self.path / EMBEDDINGS))
        if self.rows.shape != (meta["count"], meta["dim"]) or self.rows.dtype != np.dtype(meta["dtype"]):
            raise IndexFileError(f"{self.path / EMBEDDINGS}: shape {self.rows.shape} dtype {self.rows.dtype} "
                              f"disagree with {META} ({meta['count']} x {meta['dim']} {meta['dtype']})")
        self._model: LoadedModel | None = None
        self._ann = None
        self._mmap: np.ndarray | None = None
        self._bounds: np.ndarray | None = None
        self._files: list[str] | None = None
        self._held: tuple[str, object] | None = None
        if "bounds" in meta:
            bounds = NpyRows(check_regular(self.path / BOUNDS))
            bounds.close()
            if bounds.shape != (meta["count"], lower_bounds.padded_dim(meta["dim"])) or bounds.dtype != np.uint8:
                raise IndexFileError(f"{bounds.path}: shape {bounds.shape} dtype {bounds.dtype} do not match "
                                     f"{meta['count']} images of dimension {meta['dim']}")
        if os.path.lexists(self.path / FILES):
            check_regular(self.path / FILES)

    @property
    def method(self) -> str:
        """The measure: ``order`` or ``cosine``."""
        return self.meta["method"]

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def model_loaded(self) -> bool:
        """Whether :meth:`model` has loaded the model already."""
        return self._model is not None

    def model(self, device: str | torch.device | None = None) -> LoadedModel:
        """The model the index was built with (loaded once), to encode queries."""
        if self._model is None:
            if not self.meta.get("run"):
                raise IndexFileError(f"{self.path / META}: records no run folder; pass the model explicitly")
            self._model = load_model(self.meta["run"], device=device or "cpu")
        return self._model

    def image_files(self) -> list[str] | None:
        """The image file of each row, for indexes built from image files (else None); read once."""
        if self._files is None and (self.path / FILES).is_file():
            try:
                raw = runs.read_regular(self.path / FILES, MAX_FILES_BYTES * max(1, len(self)), "image list")
                files = raw.decode("utf-8").splitlines()
            except UnicodeDecodeError:
                raise IndexFileError(f"{self.path / FILES}: not UTF-8 text") from None
            except runs.RunError as e:
                raise IndexFileError(str(e)) from None
            if len(files) != len(self):
                raise IndexFileError(f"{self.path / FILES}: {len(files)} lines for {len(self)} images")
            self._files = files
        return self._files

    def embeddings(self) -> np.ndarray:
        """The stored embeddings as a read-only memory map (for random row access)."""
        if self._mmap is None:
            self._mmap = np.load(self.path / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
        return self._mmap

    def bounded(self) -> bool:
        """Whether exact search here skips images through the stored lower bounds (needs AVX-512 VNNI)."""
        return "bounds" in self.meta and self.meta["dim"] <= lower_bounds.MAX_DIM and lower_bounds.supported()

    def on_device(self, device: str | torch.device) -> object | None:
        """The stored embeddings held on a CUDA ``device`` (loaded once; packed for the Triton kernels under the
        order measure), or None when they would take more than ``DEVICE_SHARE`` of its free memory."""
        device = torch.device(device)
        if self._held is not None and self._held[0] == str(device):
            return self._held[1]
        self._held = None  # the copy on another device is let go first
        count, dim = self.rows.shape
        dtype = torch.float16 if self.meta["dtype"] == "float16" else torch.float32
        padded = (count + 127) // 128 * 128 * ((dim + 15) // 16 * 16)
        free, _ = torch.cuda.mem_get_info(device)
        if padded * dtype.itemsize > DEVICE_SHARE * free:
            return None
        held: object
        if self.method == "order" and gpu.kernels().triton is not None:
            held = packed = gpu.kernels().Packed(count, dim, dtype, device)
            for first, block in gpu.host_blocks(self.rows, device, DEVICE_LOAD_ROWS):
                packed.write(first, block)
        else:
            held = whole = torch.empty((count, dim), dtype=dtype, device=device)
            for first, block in gpu.host_blocks(self.rows, device, DEVICE_LOAD_ROWS):
                whole[first : first + len(block)] = block
        self._held = (str(device), held)
        return held

    def search_vectors(self, queries: np.ndarray, k: int = 10, approximate: bool = False,
                       candidates: int = 1000, nprobe: int = 32, bounds: bool = True,
                       device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(errors, image indices)`` of the ``k`` best images for each query embedding row.

        Exact: the result of scoring every stored row; with ``bounds`` (and when
        :meth:`bounded`), images whose lower bound rules them out are skipped.
        On a CUDA ``device`` (by default the device of the loaded model, if any)
        exact search scores on the GPU, holding the embeddings there when they fit
        (:meth:`on_device`) and streaming them in blocks otherwise.
        Approximate: FAISS proposes ``candidates`` images per query by inner
        product, which are then scored exactly; needs :func:`build_ann` first.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.meta["dim"]:
            raise ValueError(f"queries must be n x {self.meta['dim']}, got shape {queries.shape}")
        if device is None and self._model is not None:
            device = self._model.device
        if not approximate and device is not None and torch.device(device).type == "cuda":
            held = self.on_device(device)
            return exact_topk(queries, self.rows if held is None else held, self.method, k, device=device)
        if not approximate:
            if bounds and self.bounded():
                if self._bounds is None:
                    self._bounds = np.load(self.path / BOUNDS, mmap_mode="r", allow_pickle=False)
                return lower_bounds.order_topk_bounded(queries, self.embeddings(), self._bounds, self.meta["bounds"]["step"], k)
            return exact_topk(queries, self.rows, self.method, k)
        ann = self.ann()
        set_search_params(ann, nprobe)
        _, cand = ann.search(np.ascontiguousarray(queries), max(int(k), int(candidates)))
        return rerank(queries, self.embeddings(), cand, self.method, k)

    def search(self, sentences: Sequence[str], k: int = 10, approximate: bool = False, candidates: int = 1000,
               nprobe: int = 32, batch_size: int = 1024,
               device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(errors, image indices)`` of the ``k`` best images for each sentence, queries batched together.

        ``device`` is where the model encodes the queries and exact search scores them (default: cpu).
        """
        if isinstance(sentences, str):
            raise ValueError("pass a list of sentences, not one string")
        for i, sentence in enumerate(sentences):
            check_query(sentence, f"query {i + 1}" if len(sentences) > 1 else "query")
        model = self.model(device)
        errors, indices = [], []
        for i in range(0, len(sentences), batch_size):
            q = encode_sentences(model, list(sentences[i : i + batch_size]))
            e, idx = self.search_vectors(q, k, approximate, candidates, nprobe, device=model.device)
            errors.append(e)
            indices.append(idx)
        if not errors:
            return np.empty((0, min(k, len(self))), np.float32), np.empty((0, min(k, len(self))), np.int64)
        return np.concatenate(errors), np.concatenate(indices)

    def ann(self):
        """The stored FAISS candidate index (loaded once)."""
        if self._ann is None:
            self._ann = load_ann(self.path)
        return self._ann
