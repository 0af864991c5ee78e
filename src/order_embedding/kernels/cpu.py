"""Fast CPU kernels for the order-violation penalty ``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2``.

``order_error_matrix`` fills the whole captions x images matrix and ``order_topk``
keeps only the ``k`` smallest errors of each caption while streaming the images in
blocks, so neither ever holds a captions x images x dim array. Both compute in
float32 (each term is a float32 subtraction and a float32 square; the sum over the
dimension is accumulated in float32 vector lanes) and take any real input dtype
and layout, converted once (or block by block) to C-contiguous float32.

The compiled kernels are cached on disk by numba, so the compilation cost is paid
once per machine and numba version.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import njit, prange
from tqdm import tqdm

from ..options import positive_int
from .common import (
    CACHE_IMAGES,
    FASTMATH,
    NO_IMAGE,
    TILE,
    TOPK_QUERIES,
    convert_into,
    f32_at,
    float32_matrix,
    half_to_float,
    heap_push,
    merge_parts,
    release_pages,
    threads_for,
    tile,
    u16_at,
)

#: Bytes of image matrix handed to the top-k kernel per call (and of its float32 conversion buffer).
TOPK_BLOCK_BYTES = 1 << 26
#: Images scored at once by the blockwise cosine top-k.
COSINE_BLOCK = 65536


@njit(fastmath=FASTMATH, parallel=True, boundscheck=False, cache=True)
def _error_kernel(s: np.ndarray, im: np.ndarray, out: np.ndarray, row_parts: int, col_parts: int) -> None:
    """out[a, b] = penalty(s[a], im[b]) for float32 C-contiguous inputs.

    The work is cut into row_parts x col_parts rectangles run in parallel; inside one,
    images go in cache blocks and each block is swept by 4 x 4 tiles.
    """
    n, m = s.shape[0], im.shape[0]
    n_tiles = n // TILE
    for part in prange(row_parts * col_parts):
        rp = part // col_parts
        cp = part - rp * col_parts
        # Row parts start on tile boundaries; the last one takes any leftover captions.
        a_start = rp * n_tiles // row_parts * TILE
        a_end = (rp + 1) * n_tiles // row_parts * TILE if rp < row_parts - 1 else n
        b_start = cp * m // col_parts
        b_end = (cp + 1) * m // col_parts
        for b0 in range(b_start, b_end, CACHE_IMAGES):
            b1 = min(b0 + CACHE_IMAGES, b_end)
            for a in range(a_start, a_end, TILE):
                ra = min(TILE, a_end - a)
                for b in range(b0, b1, TILE):
                    tile(s, a, ra, im, b, min(TILE, b1 - b), out, b)


def _split(n: int, m: int, threads: int) -> tuple[int, int]:
    """Rectangles (row parts, column parts) giving every thread a few of similar size.

    Rows are split first, but only while a part keeps at least 32 caption tiles, so
    that every image cache block is reused by many captions before it is evicted.
    """
    if threads == 1:
        return 1, 1
    want = 4 * threads
    rows = min(want, max(1, n // (32 * TILE)))
    cols = max(1, min(-(-want // rows), -(-m // CACHE_IMAGES)))
    return rows, cols


def _check_dims(s: np.ndarray, im: np.ndarray) -> None:
    if s.shape[1] != im.shape[1]:
        raise ValueError(
            f"captions have dimension {s.shape[1]} but images have dimension {im.shape[1]}"
        )


def order_error_matrix(s: np.ndarray, im: np.ndarray) -> np.ndarray:
    """``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2`` for captions ``s`` (n x d) and images ``im`` (m x d).

    Returns a C-contiguous float32 n x m array. Inputs of any real dtype and layout
    are accepted; NaN in an input gives NaN in the affected entries.
    """
    s = np.asarray(s)
    im = np.asarray(im)
    if s.ndim != 2 or im.ndim != 2:
        raise ValueError(f"captions and images must be 2-D matrices, got shapes {s.shape} and {im.shape}")
    _check_dims(s, im)
    s32 = float32_matrix(s, "captions")
    im32 = float32_matrix(im, "images")
    out = np.empty((s32.shape[0], im32.shape[0]), dtype=np.float32)
    if out.size == 0:
        return out
    if s32.shape[1] == 0:
        out.fill(0)
        return out
    with threads_for(out.size * s32.shape[1]) as threads:
        _error_kernel(s32, im32, out, *_split(*out.shape, threads))
    return out


@njit(fastmath=FASTMATH, inline="always", boundscheck=False, cache=True)
def _add_violation(out: np.ndarray, row: int, s: np.ndarray, a: int, im: np.ndarray, b: int, w: np.float32) -> None:
    """out[row] += w * max(0, s[a] - im[b])."""
    z = np.float32(0)
    for i in range(s.shape[1]):
        d = s[a, i] - im[b, i]
        if d < 0:
            d = z
        out[row, i] += w * d


@njit(fastmath=FASTMATH, parallel=True, boundscheck=False, cache=True)
def _grad_kernel(s: np.ndarray, im: np.ndarray, g: np.ndarray, grad_s: np.ndarray, grad_im: np.ndarray) -> None:
    """grad_s[a] = 2 sum_b g[a, b] max(0, s[a] - im[b]) and grad_im[b] = -2 sum_a g[a, b] max(0, s[a] - im[b]).

    Each output row is owned by one iteration of a parallel loop and summed in a
    fixed order, so the result does not depend on the number of threads. Zero
    entries of g (inactive hinges) are skipped.
    """
    n, m = s.shape[0], im.shape[0]
    grad_s[:] = 0
    grad_im[:] = 0
    for a in prange(n):
        for b in range(m):
            if g[a, b] != 0:
                _add_violation(grad_s, a, s, a, im, b, np.float32(2) * g[a, b])
    for b in prange(m):
        for a in range(n):
            if g[a, b] != 0:
                _add_violation(grad_im, b, s, a, im, b, np.float32(-2) * g[a, b])


def order_error_grads(s: np.ndarray, im: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum_ab g[a, b] E[a, b]`` (``E`` from :func:`order_error_matrix`) with respect to ``s`` and ``im``.

    Float32 C-contiguous results of the shapes of ``s`` and ``im``; the n x m x d
    array of differences is never formed.
    """
    s32 = float32_matrix(np.asarray(s), "captions")
    im32 = float32_matrix(np.asarray(im), "images")
    g32 = float32_matrix(np.asarray(g), "weights")
    _check_dims(s32, im32)
    if g32.shape != (s32.shape[0], im32.shape[0]):
        raise ValueError(f"weights of shape {g32.shape} do not match {s32.shape[0]} captions x {im32.shape[0]} images")
    grad_s = np.empty_like(s32)
    grad_im = np.empty_like(im32)
    with threads_for(g32.size * s32.shape[1]):
        _grad_kernel(s32, im32, g32, grad_s, grad_im)
    return grad_s, grad_im


@njit(fastmath=FASTMATH, parallel=True, boundscheck=False, cache=True)
def _topk_kernel(q: np.ndarray, address: int, half: bool, n_images: int, first: int,
                 top_err: np.ndarray, top_idx: np.ndarray, count: np.ndarray) -> None:
    """Fold images first..first+n_images-1 into running top-k heaps, one set of heaps per part.

    q: float32 C-contiguous queries (top_err.shape[1] rows).
    address: start of the C-contiguous n_images x dim image block, float16 bits if half
    else float32. Part p (of top_err.shape[0]) takes the p-th contiguous slice of the
    block and owns heaps top_err[p, r], top_idx[p, r] holding count[p, r] entries
    for query r. NaN errors count as +inf.
    """
    n_parts, n_q = top_err.shape[0], top_err.shape[1]
    dim = q.shape[1]
    for p in prange(n_parts):
        b_start = p * n_images // n_parts
        b_end = (p + 1) * n_images // n_parts
        buffer = np.empty((CACHE_IMAGES, dim), dtype=np.float32)
        errors = np.empty((n_q, CACHE_IMAGES), dtype=np.float32)
        for b0 in range(b_start, b_end, CACHE_IMAGES):
            nb = min(CACHE_IMAGES, b_end - b0)
            if half:
                bits = numba.carray(u16_at(address + b0 * dim * 2), (nb, dim))
                for r in range(nb):
                    for i in range(dim):
                        buffer[r, i] = half_to_float(bits[r, i])
                images = buffer[:nb]
            else:
                images = numba.carray(f32_at(address + b0 * dim * 4), (nb, dim))
            for a in range(0, n_q, TILE):
                ra = min(TILE, n_q - a)
                for b in range(0, nb, TILE):
                    tile(q, a, ra, images, b, min(TILE, nb - b), errors, b)
            for r in range(n_q):
                c = count[p, r]
                for b in range(nb):
                    e = errors[r, b]
                    if e != e:
                        e = np.float32(np.inf)
                    c = heap_push(top_err[p, r], top_idx[p, r], c, e, first + b0 + b)
                count[p, r] = c


def order_topk(s: np.ndarray, im: np.ndarray, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest order-violation errors of each caption row of ``s`` over all images ``im``.

    Returns ``(errors, indices)``, float32 and int64 arrays of shape
    ``n_captions x min(k, n_images)``, each row in ascending error with ties broken
    by the lower image index (NaN errors count as +inf). ``im`` may be any 2-D
    array-like, e.g. a float16 or float32 ``np.memmap``: it is read in blocks (float16
    and float32 C-contiguous blocks in place, anything else converted to float32 block
    by block), so memory does not grow with the number of images. The errors are the
    same float32 numbers ``order_error_matrix`` gives. ``progress`` shows a progress bar.
    """
    s = np.asarray(s)
    if not hasattr(im, "shape"):
        im = np.asarray(im)
    shape = tuple(im.shape)
    if s.ndim != 2 or len(shape) != 2:
        raise ValueError(f"captions and images must be 2-D matrices, got shapes {s.shape} and {shape}")
    if s.shape[1] != shape[1]:
        raise ValueError(f"captions have dimension {s.shape[1]} but images have dimension {shape[1]}")
    k = positive_int(k, "k", allow_text=False)
    n_q, dim = s.shape
    n_im = shape[0]
    k = min(int(k), n_im)
    q32 = float32_matrix(s, "captions")
    if n_q == 0 or k == 0:
        return np.empty((n_q, k), dtype=np.float32), np.empty((n_q, k), dtype=np.int64)
    if dim == 0:
        return np.zeros((n_q, k), dtype=np.float32), np.tile(np.arange(k, dtype=np.int64), (n_q, 1))
    block = max(CACHE_IMAGES, TOPK_BLOCK_BYTES // (4 * dim))
    buffer: np.ndarray | None = None
    results = []
    steps = math.ceil(n_q / TOPK_QUERIES) * math.ceil(n_im / block)
    with tqdm(total=steps, desc="top-k", unit="block", disable=not progress) as bar:
        for q0 in range(0, n_q, TOPK_QUERIES):
            q1 = min(q0 + TOPK_QUERIES, n_q)
            queries = q32[q0:q1]
            with threads_for((q1 - q0) * n_im * dim) as threads:
                n_parts = 2 * threads if n_im >= 2 * threads * CACHE_IMAGES else 1
                top_err = np.full((n_parts, q1 - q0, k), np.inf, dtype=np.float32)
                top_idx = np.full((n_parts, q1 - q0, k), NO_IMAGE, dtype=np.int64)
                count = np.zeros((n_parts, q1 - q0), dtype=np.int64)
                for b0 in range(0, n_im, block):
                    b1 = min(b0 + block, n_im)
                    source = np.asarray(im[b0:b1])
                    if source.dtype in (np.float16, np.float32) and source.flags.c_contiguous:
                        images = source
                    else:
                        if buffer is None:
                            buffer = np.empty((block, dim), dtype=np.float32)
                        images = buffer[: b1 - b0]
                        convert_into(source, images)
                    _topk_kernel(queries, images.ctypes.data, images.dtype == np.float16, b1 - b0, b0,
                                 top_err, top_idx, count)
                    if images is source:
                        release_pages(im, source)
                    bar.update()
            results.append(merge_parts(top_err, top_idx, k))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


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
    k = min(positive_int(k, "k", allow_text=False), n_im)
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
