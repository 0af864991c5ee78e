"""The index folder's format: its file names, its description and its errors."""
from __future__ import annotations

from ..data.npy import DTYPES, NpyFileError

EMBEDDINGS = "embeddings.npy"
META = "index.json"
ANN = "faiss.index"
BOUNDS = "bounds.npy"
FILES = "images.txt"
FORMAT = "order-embedding-index"

__all__ = ["ANN", "BOUNDS", "DTYPES", "EMBEDDINGS", "FILES", "FORMAT", "META", "IndexFileError"]


class IndexFileError(NpyFileError):
    """A missing, corrupt or mismatched index folder (message names the file)."""
