"""Approximate candidates from FAISS inner-product indexes, re-ranked exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..kernels import as_float32
from ..measures import measure
from .layout import ANN, IndexFileError


def rerank(queries: np.ndarray, embeddings: np.ndarray, candidates: np.ndarray, method: str,
           k: int, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each query among its candidate image indices (``-1`` entries are ignored)."""
    errors_fn = measure(method).errors
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


def faiss_module():
    """The ``faiss`` module, or a one-line error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise ValueError("approximate search needs FAISS: pip install 'order-embedding[faiss]'") from None
    return faiss


def set_search_params(ann, nprobe: int) -> None:
    """Set how widely a FAISS index searches: IVF lists probed, or the HNSW search depth."""
    faiss = faiss_module()
    ivf = faiss.try_extract_index_ivf(ann)
    if ivf is not None:
        ivf.nprobe = int(nprobe)
    elif hasattr(ann, "hnsw"):
        ann.hnsw.efSearch = max(int(nprobe), 16)


def load_ann(folder: Path):
    """The FAISS candidate index stored in an index folder."""
    faiss = faiss_module()
    if not (folder / ANN).is_file():
        raise IndexFileError(f"{folder}: no approximate index ({ANN}); run build_ann / 'index build --ann' first")
    return faiss.read_index(str(folder / ANN))
