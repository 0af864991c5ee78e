"""What the CPU kernels share: tiles of 4 x 4 order penalties, top-k heaps, float32 conversion, threads.

Used by :mod:`.cpu` (full matrices and streamed top-k) and :mod:`.bounds` (top-k that
skips images through lower bounds), so that both score a pair with the same float32
operations.
"""
from __future__ import annotations

import mmap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Reassociation lets the compiler keep one vector of partial sums per (caption,
# image) pair and add the lanes at the end; contraction lets it fuse the square
# and the add. No other fast-math flag is used, so NaN and infinity propagate.
FASTMATH = {"reassoc", "contract"}

#: Captions and images handled together by the innermost kernel (4 x 4 pairs share loads).
TILE = 4
#: Images of one cache block (128 rows of 1024 float32 fill half a 1 MiB L2 cache).
CACHE_IMAGES = 128
#: Below this many elements (captions x images x dim) one thread is faster than two.
SERIAL_ELEMENTS = 1 << 22
#: Most query rows scored against one pass over the images (16 MiB of float32 at dim 1024).
TOPK_QUERIES = 4096
#: Index stored in unfilled top-k slots so that they sort after every real image.
NO_IMAGE = np.iinfo(np.int64).max



@intrinsic
def half_to_float(typingctx, bits):
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
f32_at = _pointer_intrinsic(types.float32)
u16_at = _pointer_intrinsic(types.uint16)


@njit(fastmath=FASTMATH, inline="always", boundscheck=False, cache=True)
def tile_rows(s: np.ndarray, a0: int, a1: int, a2: int, a3: int, im: np.ndarray, b0: int, b1: int, b2: int,
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


@njit(fastmath=FASTMATH, inline="always", boundscheck=False, cache=True)
def tile(s: np.ndarray, a: int, ra: int, im: np.ndarray, b: int, rb: int, out: np.ndarray, ob: int) -> None:
    """Penalties of captions a..a+ra-1 against images b..b+rb-1 (1 <= ra, rb <= 4), written to out[a.., ob..].

    Always 4 x 4 pairs are summed (missing rows repeat the last one and are not
    written), so every entry, wherever it lies, is the same sequence of operations.
    """
    sums = tile_rows(s, a, a + min(1, ra - 1), a + min(2, ra - 1), a + min(3, ra - 1),
                      im, b, b + min(1, rb - 1), b + min(2, rb - 1), b + min(3, rb - 1))
    for r in range(ra):
        for c in range(rb):
            out[a + r, ob + c] = sums[4 * r + c]


@contextmanager
def threads_for(elements: int) -> Iterator[int]:
    """Run numba's parallel loops on one thread when the work is too small to share."""
    before = numba.get_num_threads()
    if elements < SERIAL_ELEMENTS and before > 1:
        numba.set_num_threads(1)
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(before)


def float32_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 matrix (no copy when it already is one)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix of row vectors, got shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if in_place(x):
        return x
    out = np.empty(x.shape, dtype=np.float32)
    convert_into(x, out)
    return out


def in_place(x: np.ndarray) -> bool:
    """Whether the kernels can read ``x`` in place (read-only arrays would need another compiled variant)."""
    return x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable


def convert_into(x: np.ndarray, out: np.ndarray) -> None:
    """Copy ``x`` into the float32 array ``out`` of the same shape."""
    if x.dtype == np.float16 and x.size and all(st >= 0 for st in x.strides):
        # NumPy's float16 conversion is scalar; torch's is vectorised.
        with warnings.catch_warnings():
            # Only read: torch warns about wrapping read-only arrays such as memmaps.
            warnings.simplefilter("ignore", UserWarning)
            torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(x)))
    else:
        np.copyto(out, x, casting="unsafe")


@njit(inline="always", cache=True)
def _after(e1: np.float32, i1: np.int64, e2: np.float32, i2: np.int64) -> bool:
    """Whether (e1, i1) comes after (e2, i2): larger error, or equal error and larger index."""
    return bool(e1 > e2 or (e1 == e2 and i1 > i2))


@njit(inline="always", boundscheck=False, cache=True)
def heap_push(err: np.ndarray, idx: np.ndarray, count: int, e: np.float32, image: np.int64) -> int:
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


def merge_parts(top_err: np.ndarray, top_idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each query over all parts' heaps (parts x queries x k), sorted by (error, index)."""
    n_q = top_err.shape[1]
    err = np.moveaxis(top_err, 0, 1).reshape(n_q, -1)
    idx = np.moveaxis(top_idx, 0, 1).reshape(n_q, -1)
    order = np.lexsort((idx, err), axis=1)[:, :k]
    return np.take_along_axis(err, order, 1), np.take_along_axis(idx, order, 1)


def release_pages(im: object, block: np.ndarray) -> None:
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
