"""Building an index: images encoded in blocks, stored once, with the order penalty's lower bounds."""
from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import runs
from ..data.npy import NpyRows, NpyWriter
from ..inference import (
    LoadedModel,
    check_image_files,
    encode_images,
    image_input,
    load_model,
)
from ..kernels import as_float32
from ..kernels.bounds import LEVEL_ROWS, SAMPLE, bound_step, image_levels, padded_dim
from .ann import faiss_module
from .layout import ANN, BOUNDS, DTYPES, EMBEDDINGS, FILES, FORMAT, META
from .search import Index

#: Rows encoded and written at once while building (bounded memory).
BUILD_BLOCK = 16384


def _model(run: str | os.PathLike | LoadedModel, device: str | None) -> LoadedModel:
    return run if isinstance(run, LoadedModel) else load_model(run, device=device or "cpu")


def build_index(
    run: str | os.PathLike | LoadedModel,
    features: str | os.PathLike | np.ndarray | None,
    out: str | os.PathLike,
    dtype: str = "float16",
    overwrite: bool = False,
    block: int = BUILD_BLOCK,
    device: str | None = None,
    verbose: bool = False,
    images: Sequence[str | os.PathLike] | None = None,
) -> Path:
    """Encode images with a model and store them as an index folder.

    The images are CNN feature rows (``features``: an ``.npy`` path or an array) or,
    for a model trained from pixels, image files (``images``: paths; ``features``
    None). The folder appears complete or not at all (it is assembled under a
    temporary name and renamed); an existing one is replaced only with ``overwrite``
    and only when it is an index folder (:func:`~order_embedding.runs.check_replaceable`),
    and never when it holds one of the inputs.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if (features is None) == (images is None):
        raise ValueError("give either image features or image files")
    out = Path(out)
    sources = [features if isinstance(features, (str, os.PathLike)) else None,
               *(images or ()), run if isinstance(run, (str, os.PathLike)) else None]
    runs.check_output(out, "--out", sources, folder=True)
    runs.check_replaceable(out, "index", overwrite)
    model = _model(run, device)
    if model.run_dir is not None:
        runs.check_output(out, "--out", [model.run_dir], folder=True)
    if images is not None:
        paths = list(images)
        check_image_files(model, paths)
        source: _ImageBlocks | NpyRows | np.ndarray = _ImageBlocks(model, paths)
    else:
        assert features is not None  # exactly one of features and images, checked above
        if model.config.backbone is not None:
            raise ValueError("this model reads pixels: index its image files instead of feature rows")
        source = NpyRows(features) if not isinstance(features, np.ndarray) else features
        if source.ndim != 2 or source.shape[1] != model.config.dim_image:
            raise ValueError(f"{features if not isinstance(features, np.ndarray) else 'features'}: shape "
                             f"{tuple(source.shape)} does not match the model's {model.config.dim_image}-d image features")
    n = source.shape[0]
    tmp = runs.staging_folder(out)
    try:
        writer = NpyWriter(tmp / EMBEDDINGS, (n, model.config.dim), dtype)
        for start in tqdm(range(0, n, block), desc="indexing", unit="block", disable=not verbose):
            writer.write(encode_images(model, source[start : start + block]))
        writer.close()
        if images is not None:
            (tmp / FILES).write_text("".join(f"{Path(p).resolve()}\n" for p in paths), encoding="utf-8")
        meta = {
            "format": FORMAT, "version": 1, "method": model.config.method, "dim": model.config.dim,
            "dtype": dtype, "count": n, "run": str(model.run_dir.resolve()) if model.run_dir else None,
            "features": str(Path(features).resolve()) if isinstance(features, (str, os.PathLike)) else None,
            "created": time.time(),
        }
        if model.config.method == "order":
            meta["bounds"] = _write_bounds(tmp, verbose)
        runs.save_json(tmp / META, meta)
        runs.replace_folder(tmp, out)
    finally:
        if isinstance(source, NpyRows):
            source.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class _ImageBlocks:
    """Image files as row blocks of a model's image input, decoded a block at a time."""

    def __init__(self, model: LoadedModel, paths: list) -> None:
        self.model = model
        self.paths = paths
        self.shape = (len(paths),)

    def __getitem__(self, key: slice):
        return image_input(self.model, self.paths[key])


def _write_bounds(folder: Path, verbose: bool) -> dict:
    """Write ``bounds.npy`` for the embeddings in ``folder``; returns its description for ``index.json``."""
    rows = NpyRows(folder / EMBEDDINGS)
    try:
        n = len(rows)
        stride = max(1, n // SAMPLE)
        sample = np.concatenate([rows[i : i + 1] for i in range(0, n, stride)]) if n else np.zeros((0, 1))
        step = bound_step(sample)
        tmp = folder / f".{BOUNDS}.tmp"
        write_bounds(rows, tmp, step, progress=verbose)
        os.replace(tmp, folder / BOUNDS)
    finally:
        rows.close()
    return {"step": step}


def write_bounds(im, path: str | os.PathLike, step: float, block: int = 4 * LEVEL_ROWS,
                 progress: bool = False) -> None:
    """Write the bound rows of images ``im`` (any 2-D array-like, read in blocks) to an ``.npy`` file."""
    n, dim = im.shape
    writer = NpyWriter(path, (n, padded_dim(dim)), np.dtype(np.uint8))
    for b0 in tqdm(range(0, n, block), desc="bounds", unit="block", disable=not progress):
        writer.write(image_levels(np.asarray(im[b0 : b0 + block]), step))
    writer.close()


def build_ann(path: str | os.PathLike, kind: str = "ivf", nlist: int | None = None, hnsw_m: int = 32,
              train_size: int = 100_000, block: int = 65536, seed: int = 0, verbose: bool = False) -> Path:
    """Train and store a FAISS inner-product candidate index over an index folder's embeddings.

    ``kind``: ``ivf`` (inverted lists of 8-bit scalar-quantised vectors, ``nlist``
    lists, default about 4 sqrt(n)) or ``hnsw`` (graph with ``hnsw_m`` links).
    Vectors are added block by block.
    """
    faiss = faiss_module()
    index = Index(path)
    n, dim = index.rows.shape
    if kind == "ivf":
        nlist = int(nlist or max(1, min(n // 39, int(4 * math.sqrt(n)))))
        ann = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, max(train_size, nlist)), replace=False))
        mm = index.embeddings()
        train = np.concatenate([as_float32(mm[sample[i : i + block]]) for i in range(0, len(sample), block)])
        ann.train(train)
        del train
    elif kind == "hnsw":
        ann = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
    else:
        raise ValueError(f"kind must be 'ivf' or 'hnsw', got {kind!r}")
    for start in tqdm(range(0, n, block), desc="faiss", unit="block", disable=not verbose):
        ann.add(as_float32(index.rows[start : start + block]))
    tmp = index.path / f".{ANN}.tmp-{os.getpid()}"
    faiss.write_index(ann, str(tmp))
    os.replace(tmp, index.path / ANN)
    return index.path / ANN
