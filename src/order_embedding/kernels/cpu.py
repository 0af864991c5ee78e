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
import mmap
import warnings
from contextlib import contextmanager
from typing import Iterator

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic
from tqdm import tqdm

# Reassociation lets the compiler keep one vector of partial sums per (caption,
# image) pair and add the lanes at the end; contraction lets it fuse the square
# and the add. No other fast-math flag is used, so NaN and infinity propagate.
_FASTMATH = {"reassoc", "contract"}

#: Captions and images handled together by the innermost kernel (4 x 4 pairs share loads).
TILE = 4
#: Images of one cache block (128 rows of 1024 float32 fill half a 1 MiB L2 cache).
CACHE_IMAGES = 128
#: Below this many elements (captions x images x dim) one thread is faster than two.
SERIAL_ELEMENTS = 1 << 22
#: Bytes of image matrix handed to the top-k kernel per call (and of its float32 conversion buffer).
TOPK_BLOCK_BYTES = 1 << 26
#: Most query rows scored against one pass over the images (16 MiB of float32 at dim 1024).
TOPK_QUERIES = 4096
#: Index stored in unfilled top-k slots so that they sort after every real image.
_NO_IMAGE = np.iinfo(np.int64).max


@intrinsic
def _half_to_float(typingctx, bits):
    """IEEE half-precision bits (uint16) to float32, exactly (vectorises to F16C conversions)."""
    if bits != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


def _pointer_intrinsic(dtype):
    @intrinsic
    def pointer(typingctx, address):
        """A typed pointer to the memory at an integer address."""
        if address not in types.integer_domain:
            return None

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(dtype)))

        return types.CPointer(dtype)(address), codegen

    return pointer


# The top-k kernel reads the image matrix through a raw address, so that read-only
# arrays (such as a memmap opened with mode "r") need no separate compiled variant.
_f32_at = _pointer_intrinsic(types.float32)
_u16_at = _pointer_intrinsic(types.uint16)


@njit(fastmath=_FASTMATH, inline="always", boundscheck=False, cache=True)
def _tile_rows(s: np.ndarray, a0: int, a1: int, a2: int, a3: int, im: np.ndarray, b0: int, b1: int, b2: int,
               b3: int) -> tuple:
    """Penalties of caption rows a0..a3 against image rows b0..b3, as 16 float32 (caption-major).

    Every one of the 16 sums is the same sequence of operations, so a pair's penalty
    does not depend on the rows it is computed beside.
    """
    z = np.float32(0)
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
    c02 = c03 = c12 = c13 = c22 = c23 = c32 = c33 = z
    for i in range(s.shape[1]):
        x0 = s[a0, i]
        x1 = s[a1, i]
        x2 = s[a2, i]
        x3 = s[a3, i]
        y0 = im[b0, i]
        y1 = im[b1, i]
        y2 = im[b2, i]
        y3 = im[b3, i]
        d = x0 - y0
        if d < 0:
            d = z
        c00 += d * d
        d = x0 - y1
        if d < 0:
            d = z
        c01 += d * d
        d = x0 - y2
        if d < 0:
            d = z
        c02 += d * d
        d = x0 - y3
        if d < 0:
            d = z
        c03 += d * d
        d = x1 - y0
        if d < 0:
            d = z
        c10 += d * d
        d = x1 - y1
        if d < 0:
            d = z
        c11 += d * d
        d = x1 - y2
        if d < 0:
            d = z
        c12 += d * d
        d = x1 - y3
        if d < 0:
            d = z
        c13 += d * d
        d = x2 - y0
        if d < 0:
            d = z
        c20 += d * d
        d = x2 - y1
        if d < 0:
            d = z
        c21 += d * d
        d = x2 - y2
        if d < 0:
            d = z
        c22 += d * d
        d = x2 - y3
        if d < 0:
            d = z
        c23 += d * d
        d = x3 - y0
        if d < 0:
            d = z
        c30 += d * d
        d = x3 - y1
        if d < 0:
            d = z
        c31 += d * d
        d = x3 - y2
        if d < 0:
            d = z
        c32 += d * d
        d = x3 - y3
        if d < 0:
            d = z
        c33 += d * d
    return (c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33)


@njit(fastmath=_FASTMATH, inline="always", boundscheck=False, cache=True)
def _tile(s: np.ndarray, a: int, ra: int, im: np.ndarray, b: int, rb: int, out: np.ndarray, ob: int) -> None:
    """Penalties of captions a..a+ra-1 against images b..b+rb-1 (1 <= ra, rb <= 4), written to out[a.., ob..].

    Always 4 x 4 pairs are summed (missing rows repeat the last one and are not
    written), so every entry, wherever it lies, is the same sequence of operations.
    """
    sums = _tile_rows(s, a, a + min(1, ra - 1), a + min(2, ra - 1), a + min(3, ra - 1),
                      im, b, b + min(1, rb - 1), b + min(2, rb - 1), b + min(3, rb - 1))
    for r in range(ra):
        for c in range(rb):
            out[a + r, ob + c] = sums[4 * r + c]


@njit(fastmath=_FASTMATH, parallel=True, boundscheck=False, cache=True)
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
                    _tile(s, a, ra, im, b, min(TILE, b1 - b), out, b)


@contextmanager
def _threads_for(elements: int) -> Iterator[int]:
    """Run numba's parallel loops on one thread when the work is too small to share."""
    before = numba.get_num_threads()
    if elements < SERIAL_ELEMENTS and before > 1:
        numba.set_num_threads(1)
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(before)


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


def _float32(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 matrix (no copy when it already is one)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix of row vectors, got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if _usable(x):
        return x
    out = np.empty(x.shape, dtype=np.float32)
    _convert_into(x, out)
    return out


def _usable(x: np.ndarray) -> bool:
    """Whether the kernels can read ``x`` in place (read-only arrays would need another compiled variant)."""
    return x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable


def _convert_into(x: np.ndarray, out: np.ndarray) -> None:
    """Copy ``x`` into the float32 array ``out`` of the same shape."""
    if x.dtype == np.float16 and x.size and all(st >= 0 for st in x.strides):
        # NumPy's float16 conversion is scalar; torch's is vectorised.
        with warnings.catch_warnings():
            # Only read: torch warns about wrapping read-only arrays such as memmaps.
            warnings.simplefilter("ignore", UserWarning)
            torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(x)))
    else:
        np.copyto(out, x, casting="unsafe")


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
    s32 = _float32(s, "captions")
    im32 = _float32(im, "images")
    out = np.empty((s32.shape[0], im32.shape[0]), dtype=np.float32)
    if out.size == 0:
        return out
    if s32.shape[1] == 0:
        out.fill(0)
        return out
    with _threads_for(out.size * s32.shape[1]) as threads:
        _error_kernel(s32, im32, out, *_split(*out.shape, threads))
    return out


@njit(fastmath=_FASTMATH, inline="always", boundscheck=False, cache=True)
def _add_violation(out: np.ndarray, row: int, s: np.ndarray, a: int, im: np.ndarray, b: int, w: np.float32) -> None:
    """out[row] += w * max(0, s[a] - im[b])."""
    z = np.float32(0)
    for i in range(s.shape[1]):
        d = s[a, i] - im[b, i]
        if d < 0:
            d = z
        out[row, i] += w * d


@njit(fastmath=_FASTMATH, parallel=True, boundscheck=False, cache=True)
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
    s32 = _float32(np.asarray(s), "captions")
    im32 = _float32(np.asarray(im), "images")
    g32 = _float32(np.asarray(g), "weights")
    _check_dims(s32, im32)
    if g32.shape != (s32.shape[0], im32.shape[0]):
        raise ValueError(f"weights of shape {g32.shape} do not match {s32.shape[0]} captions x {im32.shape[0]} images")
    grad_s = np.empty_like(s32)
    grad_im = np.empty_like(im32)
    with _threads_for(g32.size * s32.shape[1]):
        _grad_kernel(s32, im32, g32, grad_s, grad_im)
    return grad_s, grad_im




@njit(inline="always", cache=True)
def _after(e1: np.float32, i1: np.int64, e2: np.float32, i2: np.int64) -> bool:
    """Whether (e1, i1) comes after (e2, i2): larger error, or equal error and larger index."""
    return e1 > e2 or (e1 == e2 and i1 > i2)


@njit(inline="always", boundscheck=False, cache=True)
def _push(err: np.ndarray, idx: np.ndarray, count: int, e: np.float32, image: np.int64) -> int:
    """Offer (e, image) to the max-heap err/idx[:count] of capacity len(err); returns the new count.

    The heap's worst entry (largest error, then largest index) sits at position 0.
    Images must be offered in increasing index, so an equal error never displaces it.
    """
    k = err.shape[0]
    if count < k:
        pos = count
        while pos > 0:
            parent = (pos - 1) // 2
            if not _after(e, image, err[parent], idx[parent]):
                break
            err[pos] = err[parent]
            idx[pos] = idx[parent]
            pos = parent
        err[pos] = e
        idx[pos] = image
        return count + 1
    if not e < err[0]:
        return count
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        if child + 1 < k and _after(err[child + 1], idx[child + 1], err[child], idx[child]):
            child += 1
        if not _after(err[child], idx[child], e, image):
            break
        err[pos] = err[child]
        idx[pos] = idx[child]
        pos = child
    err[pos] = e
    idx[pos] = image
    return count


@njit(fastmath=_FASTMATH, parallel=True, boundscheck=False, cache=True)
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
                bits = numba.carray(_u16_at(address + b0 * dim * 2), (nb, dim))
                for r in range(nb):
                    for i in range(dim):
                        buffer[r, i] = _half_to_float(bits[r, i])
                images = buffer[:nb]
            else:
                images = numba.carray(_f32_at(address + b0 * dim * 4), (nb, dim))
            for a in range(0, n_q, TILE):
                ra = min(TILE, n_q - a)
                for b in range(0, nb, TILE):
                    _tile(q, a, ra, images, b, min(TILE, nb - b), errors, b)
            for r in range(n_q):
                c = count[p, r]
                for b in range(nb):
                    e = errors[r, b]
                    if e != e:
                        e = np.float32(np.inf)
                    c = _push(top_err[p, r], top_idx[p, r], c, e, first + b0 + b)
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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n_q, dim = s.shape
    n_im = shape[0]
    k = min(int(k), n_im)
    q32 = _float32(s, "captions")
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
            with _threads_for((q1 - q0) * n_im * dim) as threads:
                n_parts = 2 * threads if n_im >= 2 * threads * CACHE_IMAGES else 1
                top_err = np.full((n_parts, q1 - q0, k), np.inf, dtype=np.float32)
                top_idx = np.full((n_parts, q1 - q0, k), _NO_IMAGE, dtype=np.int64)
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
                        _convert_into(source, images)
                    _topk_kernel(queries, images.ctypes.data, images.dtype == np.float16, b1 - b0, b0,
                                 top_err, top_idx, count)
                    if images is source:
                        _release_pages(im, source)
                    bar.update()
            results.append(_merge_parts(top_err, top_idx, k))
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


def _merge_parts(top_err: np.ndarray, top_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each query over all parts' heaps (parts x queries x k), sorted by (error, index)."""
    n_q = top_err.shape[1]
    err = np.moveaxis(top_err, 0, 1).reshape(n_q, -1)
    idx = np.moveaxis(top_idx, 0, 1).reshape(n_q, -1)
    order = np.lexsort((idx, err), axis=1)[:, :k]
    return np.take_along_axis(err, order, 1), np.take_along_axis(idx, order, 1)


def _release_pages(im: object, block: np.ndarray) -> None:
    """Unmap the pages of a block read from a shared (mode "r"/"r+") memmap, so they stop counting as resident.

    The file data stays in the page cache; private copy-on-write maps are left alone.
    """
    handle = getattr(im, "_mmap", None)
    if not isinstance(im, np.memmap) or getattr(im, "mode", None) not in ("r", "r+") or handle is None:
        return
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    base = np.frombuffer(handle, dtype=np.uint8).ctypes.data
    start = block.ctypes.data - base
    begin = start // mmap.PAGESIZE * mmap.PAGESIZE
    end = (start + block.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > begin:
        handle.madvise(mmap.MADV_DONTNEED, begin, end - begin)
