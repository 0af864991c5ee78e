"""On-disk image indexes: embeddings stored once, searched exactly by streaming them in blocks.

An index is a folder holding ``embeddings.npy`` (images x dim, float16 or float32)
and ``index.json`` (the run it was built with, measure, dimension, dtype, count).
Exact search streams the rows through the blockwise kernels (order-violation
penalty, or minus the dot product for the symmetric model), keeping only each
query's best ``k``, so memory does not grow with the number of images. An optional
approximate mode asks a FAISS inner-product index (IVF or HNSW, stored as
``faiss.index``) for candidates and re-ranks them exactly.

Order-embedding indexes also store 7-bit lower bounds of the embeddings
(``bounds.npy``, see :mod:`order_embedding.bounds`); on CPUs with AVX-512 VNNI,
exact search uses them to skip the images that cannot enter a query's top-k and
returns the same result as the full scan.

Large inputs and outputs go through positioned file reads and writes rather than
memory maps, so the resident memory of building and encoding stays bounded too.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import runs
from .api import LoadedModel, check_image_files, encode_images, encode_sentences, image_input, load_model

EMBEDDINGS = "embeddings.npy"
META = "index.json"
ANN = "faiss.index"
BOUNDS = "bounds.npy"
FILES = "images.txt"
FORMAT = "order-embedding-index"
DTYPES = ("float16", "float32")
#: Rows encoded and written at once while building (bounded memory).
BUILD_BLOCK = 16384
#: Captions read, encoded and written at once by :func:`encode_captions_file`.
CAPTION_CHUNK = 65536
#: Images scored at once by the blockwise cosine top-k.
COSINE_BLOCK = 65536


class IndexFileError(ValueError):
    """A missing, corrupt or mismatched index folder (message names the file)."""


class NpyRows:
    """Read-only row blocks of a 2-D ``.npy`` file by positioned reads (no memory map).

    Supports ``len``, ``.shape``, ``.dtype`` and ``rows[start:stop]`` (a fresh array),
    so the blockwise kernels can stream it while the process holds one block at a time.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(f)
                self.offset = f.tell()
        except (OSError, ValueError) as e:
            raise IndexFileError(f"{self.path}: not a readable .npy file ({e})") from None
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise IndexFileError(f"{self.path}: expected a 2-D C-ordered numeric array, got shape {shape} dtype {dtype}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        expected = self.offset + self.shape[0] * self.shape[1] * self.dtype.itemsize
        if self.path.stat().st_size < expected:
            raise IndexFileError(f"{self.path}: file is truncated ({self.path.stat().st_size} of {expected} bytes)")
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        """Always 2."""
        return 2

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("NpyRows supports contiguous row slices only")
        start, stop, _ = key.indices(self.shape[0])
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        if out.size:
            view = memoryview(out.reshape(-1).view(np.uint8))
            pos, done = self.offset + start * self.shape[1] * self.dtype.itemsize, 0
            while done < len(view):
                n = os.preadv(self._fd, [view[done:]], pos + done)
                if n <= 0:
                    raise IndexFileError(f"{self.path}: unexpected end of file")
                done += n
        return out

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()


class NpyWriter:
    """Write a 2-D ``.npy`` file of known shape block by block, appending rows in order."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int], dtype: str | np.dtype) -> None:
        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self._file = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, block: np.ndarray) -> None:
        """Append rows (converted to the file's dtype)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.shape[1] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"{self.path}: block of shape {block.shape} does not fit the remaining rows of {self.shape}")
        self._file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        """Flush to disk; every row must have been written."""
        if self.rows != self.shape[0]:
            self._file.close()
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


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
    temporary name and renamed); an existing one is replaced only with ``overwrite``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if (features is None) == (images is None):
        raise ValueError("give either image features or image files")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; pass overwrite to replace it")
    model = _model(run, device)
    if images is not None:
        paths = list(images)
        check_image_files(model, paths)
        source = _ImageBlocks(model, paths)
    else:
        if model.config.backbone is not None:
            raise ValueError("this model reads pixels: index its image files instead of feature rows")
        source = NpyRows(features) if not isinstance(features, np.ndarray) else features
        if source.ndim != 2 or source.shape[1] != model.config.dim_image:
            raise ValueError(f"{features if not isinstance(features, np.ndarray) else 'features'}: shape "
                             f"{tuple(source.shape)} does not match the model's {model.config.dim_image}-d image features")
    n = source.shape[0]
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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
        if out.exists():
            trash = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
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
    from .bounds import SAMPLE, bound_step, write_bounds

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


def as_float32(x: np.ndarray) -> np.ndarray:
    """``x`` as a float32 array (float16 is converted by torch, many times faster than NumPy)."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        return torch.from_numpy(np.ascontiguousarray(x)).float().numpy()
    return np.asarray(x, dtype=np.float32)


def cosine_topk(s: np.ndarray, im, k: int, block: int = COSINE_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest errors ``-(s . im)`` of each query over images streamed in blocks.

    Returns ``(errors, indices)`` of shape ``queries x min(k, images)``, ascending,
    ties broken by the lower image index.
    """
    s = np.ascontiguousarray(s, dtype=np.float32)
    n_im = im.shape[0]
    k = min(int(k), n_im)
    best_e = np.empty((len(s), 0), np.float32)
    best_i = np.empty((len(s), 0), np.int64)
    for b0 in range(0, n_im, block):
        e = -(s @ as_float32(im[b0 : b0 + block]).T)
        kk = min(k, e.shape[1])
        if kk < e.shape[1]:
            part = np.argpartition(e, kk - 1, axis=1)[:, :kk]
            kth = np.take_along_axis(e, part, 1).max(1, keepdims=True)
            for row in np.flatnonzero((e == kth).sum(1) > 1):  # a tie at the cut: keep the lower indices
                part[row] = np.argsort(e[row], kind="stable")[:kk]
        else:
            part = np.broadcast_to(np.arange(e.shape[1]), e.shape)
        best_e = np.concatenate([best_e, np.take_along_axis(e, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + b0], axis=1)
        order = np.lexsort((best_i, best_e), axis=1)[:, :k] if best_e.size else np.empty((len(s), 0), np.int64)
        best_e, best_i = np.take_along_axis(best_e, order, 1), np.take_along_axis(best_i, order, 1)
    return best_e, best_i


def exact_topk(s: np.ndarray, im, method: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(errors, indices)`` of each query's ``k`` best images under a measure, streaming ``im`` in blocks."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    s = np.asarray(s, dtype=np.float32)
    if s.ndim != 2 or s.shape[1] != im.shape[1]:
        raise ValueError(f"queries of shape {s.shape} do not match {im.shape[1]}-d images")
    if method == "order":
        from .kernels import order_topk

        return order_topk(s, im, int(k))
    if method == "cosine":
        return cosine_topk(s, im, int(k))
    raise ValueError(f"unknown measure {method!r}; choose 'order' or 'cosine'")


class Index:
    """An index folder opened for search."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not (self.path / META).is_file():
            raise IndexFileError(f"{self.path}: not an index folder (no {META})")
        try:
            meta = runs.load_json(self.path / META)
        except (OSError, ValueError) as e:
            raise IndexFileError(f"{self.path / META}: unreadable ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise IndexFileError(f"{self.path / META}: not an {FORMAT} description")
        self.meta = meta
        self.rows = NpyRows(self.path / EMBEDDINGS)
        if self.rows.shape != (meta["count"], meta["dim"]) or self.rows.dtype != np.dtype(meta["dtype"]):
            raise IndexFileError(f"{self.path / EMBEDDINGS}: shape {self.rows.shape} dtype {self.rows.dtype} "
                              f"disagree with {META} ({meta['count']} x {meta['dim']} {meta['dtype']})")
        self._model: LoadedModel | None = None
        self._ann = None
        self._mmap: np.ndarray | None = None
        self._bounds: np.ndarray | None = None
        self._files: list[str] | None = None
        if "bounds" in meta:
            from .bounds import padded_dim

            step = meta["bounds"].get("step") if isinstance(meta["bounds"], dict) else None
            if not isinstance(step, float) or not math.isfinite(step) or step <= 0:
                raise IndexFileError(f"{self.path / META}: bounds step must be a positive number, got {step!r}")
            bounds = NpyRows(self.path / BOUNDS)
            bounds.close()
            if bounds.shape != (meta["count"], padded_dim(meta["dim"])) or bounds.dtype != np.uint8:
                raise IndexFileError(f"{bounds.path}: shape {bounds.shape} dtype {bounds.dtype} do not match "
                                     f"{meta['count']} images of dimension {meta['dim']}")

    @property
    def method(self) -> str:
        """The measure: ``order`` or ``cosine``."""
        return self.meta["method"]

    def __len__(self) -> int:
        return self.rows.shape[0]

    def model(self, device: str | None = None) -> LoadedModel:
        """The model the index was built with (loaded once), to encode queries."""
        if self._model is None:
            if not self.meta.get("run"):
                raise IndexFileError(f"{self.path / META}: records no run folder; pass the model explicitly")
            self._model = load_model(self.meta["run"], device=device or "cpu")
        return self._model

    def image_files(self) -> list[str] | None:
        """The image file of each row, for indexes built from image files (else None); read once."""
        if self._files is None and (self.path / FILES).is_file():
            files = (self.path / FILES).read_text(encoding="utf-8").splitlines()
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
        from .bounds import MAX_DIM, supported

        return "bounds" in self.meta and self.meta["dim"] <= MAX_DIM and supported()

    def search_vectors(self, queries: np.ndarray, k: int = 10, approximate: bool = False,
                       candidates: int = 1000, nprobe: int = 32, bounds: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(errors, image indices)`` of the ``k`` best images for each query embedding row.

        Exact: the result of scoring every stored row; with ``bounds`` (and when
        :meth:`bounded`), images whose lower bound rules them out are skipped.
        Approximate: FAISS proposes ``candidates`` images per query by inner
        product, which are then scored exactly; needs :func:`build_ann` first.
        """
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.meta["dim"]:
            raise ValueError(f"queries must be n x {self.meta['dim']}, got shape {queries.shape}")
        if not approximate:
            if bounds and self.bounded():
                from .bounds import order_topk_bounded

                if self._bounds is None:
                    self._bounds = np.load(self.path / BOUNDS, mmap_mode="r", allow_pickle=False)
                return order_topk_bounded(queries, self.embeddings(), self._bounds, self.meta["bounds"]["step"], k)
            return exact_topk(queries, self.rows, self.method, k)
        ann = self.ann()
        _set_search_params(ann, nprobe)
        _, cand = ann.search(np.ascontiguousarray(queries), max(int(k), int(candidates)))
        return rerank(queries, self.embeddings(), cand, self.method, k)

    def search(self, sentences: Sequence[str], k: int = 10, approximate: bool = False, candidates: int = 1000,
               nprobe: int = 32, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """``(errors, image indices)`` of the ``k`` best images for each sentence, queries batched together."""
        if isinstance(sentences, str):
            raise ValueError("pass a list of sentences, not one string")
        model = self.model()
        errors, indices = [], []
        for i in range(0, len(sentences), batch_size):
            q = encode_sentences(model, list(sentences[i : i + batch_size]))
            e, idx = self.search_vectors(q, k, approximate, candidates, nprobe)
            errors.append(e)
            indices.append(idx)
        if not errors:
            return np.empty((0, min(k, len(self))), np.float32), np.empty((0, min(k, len(self))), np.int64)
        return np.concatenate(errors), np.concatenate(indices)

    def ann(self):
        """The stored FAISS candidate index (loaded once)."""
        if self._ann is None:
            faiss = _faiss()
            if not (self.path / ANN).is_file():
                raise IndexFileError(f"{self.path}: no approximate index ({ANN}); run build_ann / 'index build --ann' first")
            self._ann = faiss.read_index(str(self.path / ANN))
        return self._ann


def rerank(queries: np.ndarray, embeddings: np.ndarray, candidates: np.ndarray, method: str,
           k: int, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each query among its candidate image indices (``-1`` entries are ignored)."""
    from .measures import errors_for

    errors_fn = errors_for(method)
    k = min(int(k), candidates.shape[1])
    out_e = np.full((len(queries), k), np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for q0 in range(0, len(queries), chunk):
        # sorted unique ids (ties go to the lower index); rows of several queries gathered and converted at once
        ids = [np.unique(c[c >= 0]) for c in candidates[q0 : q0 + chunk]]
        rows = as_float32(embeddings[np.concatenate(ids)])
        start = 0
        for q, own in enumerate(ids, q0):
            if own.size:
                e = errors_fn(queries[q : q + 1], rows[start : start + own.size])[0]
                best = np.argsort(e, kind="stable")[:k]
                out_e[q, : len(best)] = e[best]
                out_i[q, : len(best)] = own[best]
            start += own.size
    return out_e, out_i


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ValueError("approximate search needs FAISS: pip install 'order-embedding[faiss]'") from None
    return faiss


def _set_search_params(ann, nprobe: int) -> None:
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(ann)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    elif hasattr(ann, "hnsw"):
        ann.hnsw.efSearch = max(int(nprobe), 16)


def build_ann(path: str | os.PathLike, kind: str = "ivf", nlist: int | None = None, hnsw_m: int = 32,
              train_size: int = 100_000, block: int = 65536, seed: int = 0, verbose: bool = False) -> Path:
    """Train and store a FAISS inner-product candidate index over an index folder's embeddings.

    ``kind``: ``ivf`` (inverted lists of 8-bit scalar-quantised vectors, ``nlist``
    lists, default about 4 sqrt(n)) or ``hnsw`` (graph with ``hnsw_m`` links).
    Vectors are added block by block.
    """
    faiss = _faiss()
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


def read_caption_chunks(path: str | os.PathLike, chunk: int = CAPTION_CHUNK) -> Iterator[list[str]]:
    """Lines of a UTF-8 caption file in lists of ``chunk``; empty lines and bad encodings are errors naming the line."""
    path = Path(path)
    lines: list[str] = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: line {number} is not UTF-8") from None
            if not line.strip():
                raise ValueError(f"{path}: line {number} is empty")
            lines.append(line)
            if len(lines) == chunk:
                yield lines
                lines = []
    if lines:
        yield lines


def count_captions(path: str | os.PathLike) -> int:
    """Number of lines of a caption file, checked as :func:`read_caption_chunks` checks them."""
    return sum(len(lines) for lines in read_caption_chunks(path))


def encode_captions_file(model: LoadedModel, captions: str | os.PathLike, out: str | os.PathLike,
                         dtype: str = "float32", chunk: int = CAPTION_CHUNK, batch_size: int = 128,
                         verbose: bool = False) -> tuple[int, int]:
    """Embed every line of a caption file into an ``.npy`` (written atomically), a chunk of lines at a time.

    Memory stays bounded by the chunk, whatever the number of captions. Returns the shape.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    out = Path(out)
    n = count_captions(captions)  # a first pass finds bad lines before any work
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    writer = NpyWriter(tmp, (n, model.config.dim), dtype)
    try:
        with tqdm(total=n, desc="captions", unit="caption", disable=not verbose) as bar:
            for lines in read_caption_chunks(captions, chunk):
                writer.write(encode_sentences(model, lines, batch_size=batch_size))
                bar.update(len(lines))
        writer.close()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n, model.config.dim


def format_results(sentences: Iterable[str], errors: np.ndarray, indices: np.ndarray,
                   files: Sequence[str] | None = None) -> list[dict]:
    """JSON-ready search results: per query, its images (with their files, when known) and errors in ranked order."""
    def hit(e: float, i: int) -> dict:
        return {"image": int(i), "error": float(e), **({"file": files[int(i)]} if files is not None else {})}

    return [{"query": q, "results": [hit(e, i) for e, i in zip(er, ix) if i >= 0]}
            for q, er, ix in zip(sentences, errors, indices)]

