"""On-disk image indexes: embeddings stored once, searched exactly by streaming them in blocks.

An index is a folder holding ``embeddings.npy`` (images x dim, float16 or float32)
and ``index.json`` (the run it was built with, measure, dimension, dtype, count).
Exact search streams the rows through the blockwise kernels (order-violation
penalty, or minus the dot product for the symmetric model), keeping only each
query's best ``k``, so memory does not grow with the number of images. An optional
approximate mode asks a FAISS inner-product index (IVF or HNSW, stored as
``faiss.index``) for candidates and re-ranks them exactly.

Order-embedding indexes also store 7-bit lower bounds of the embeddings
(``bounds.npy``, see :mod:`order_embedding.kernels.bounds`); on CPUs with AVX-512 VNNI,
exact search uses them to skip the images that cannot enter a query's top-k and
returns the same result as the full scan.

Large inputs and outputs go through positioned file reads and writes rather than
memory maps, so the resident memory of building and encoding stays bounded too.

Modules: :mod:`.layout` (the folder's files and errors), :mod:`.build` (encoding and
storing), :mod:`.search` (the :class:`Index` class), :mod:`.ann` (FAISS candidates).
"""
from .build import build_ann, build_index
from .layout import BOUNDS, DTYPES, EMBEDDINGS, FILES, META, IndexFileError
from .search import Index, check_query

__all__ = ["BOUNDS", "DTYPES", "EMBEDDINGS", "FILES", "META", "Index", "IndexFileError", "build_ann", "build_index",
           "check_query"]
