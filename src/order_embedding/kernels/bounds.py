"""Exact order-violation top-k that skips images through a 7-bit lower bound.

With a step ``delta``, images are stored rounded up, ``ceil(im / delta)``, and
queries rounded down, ``floor(s / delta)``, both clipped to 0..127. Then
``delta * max(0, s_q - im_q) <= max(0, s - im)`` in every coordinate, so

    delta^2 * sum_i max(0, s_q[i] - im_q[i])^2  <=  E(s, im)

and an image whose bound already exceeds a query's current ``k``-th best error
cannot enter that query's top-k. (A clipped image coordinate of 127 contributes
nothing, so clipping keeps the bound valid.) The bound is an integer sum over
bytes, computed with AVX-512 VNNI (64 coordinates per instruction); only the
surviving (query, image) pairs are scored in float32 by the same 4 x 4 tile as
:func:`~order_embedding.kernels.order_topk`, so the result is that function's,
error for error and index for index.

The bounds live next to an index's embeddings (``bounds.npy``, one byte per
coordinate, rows padded to a multiple of 64) with the step in ``index.json``.
"""
from __future__ import annotations

import math

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from tqdm import tqdm

from ..options import positive_int
from .common import (
    NO_IMAGE,
    TILE,
    TOPK_QUERIES,
    f32_at,
    float32_matrix,
    half_to_float,
    heap_push,
    merge_parts,
    release_pages,
    threads_for,
    tile_rows,
    u16_at,
)
from .cpu import order_topk

#: Largest stored level: differences stay in 0..127, the signed operand range of VNNI.
LEVELS = 127
#: Bytes of one vector step; bound rows are padded to a multiple of it.
CHUNK = 64
#: Quantile of the image coordinates mapped to the top level (larger coordinates are clipped).
QUANTILE = 0.9999
#: Relative slack between the bound and float32 errors (float32 sums of 1,024 terms err by ~1e-5).
SLACK = 1e-4
#: Largest dimension whose integer bound cannot overflow int32.
MAX_DIM = (2**31 - 1) // (LEVELS * LEVELS) // CHUNK * CHUNK
#: Images whose bounds are streamed per kernel call.
BLOCK_ROWS = 65536
#: Images scored exactly first (16 runs spread over the index) to start every query with a finite limit.
SAMPLE = 16384
#: Smaller collections start without that sample (their limits come from the first images scanned).
MIN_IMAGES = 4 * SAMPLE

_I8x64 = ir.VectorType(ir.IntType(8), CHUNK)
_I32x16 = ir.VectorType(ir.IntType(32), 16)
_NO_LIMIT = np.int32(2**31 - 1)


def supported() -> bool:
    """Whether this CPU runs the bound kernel (AVX-512 BW and VNNI, code compiled for the host)."""
    if numba.config.CPU_NAME not in (None, "host"):
        return False
    features = llvm.get_host_cpu_features()
    return bool(features.get("avx512bw")) and bool(features.get("avx512vnni"))


def padded_dim(dim: int) -> int:
    """Bytes per stored bound row: ``dim`` rounded up to a multiple of 64."""
    return -(-dim // CHUNK) * CHUNK


def bound_step(sample: np.ndarray) -> float:
    """The step ``delta`` for images like ``sample``: its 99.99th-percentile coordinate over 127."""
    x = float32_matrix(np.asarray(sample), "sample").ravel()
    x = x[np.isfinite(x) & (x > 0)]
    if x.size == 0:
        return 1.0
    return float(np.quantile(x, QUANTILE)) / LEVELS


#: Rows converted at once by the level functions (bounded working memory).
LEVEL_ROWS = 8192
#: Margin for float32 rounding of ``x / step`` (at most 127 * 2**-23 off); it only loosens the bound.
_ROUNDING = np.float32(1e-4)


def _levels(x: np.ndarray, step: float, up: bool) -> np.ndarray:
    """Rows of ``x`` as bytes ``ceil`` (up) or ``floor`` of ``x / step``, clipped to 0..127, padded to 64.

    Images round up and queries down even where float32 rounding of the division
    lands on the other side of a level, so the bound stays a bound.
    """
    x = np.asarray(x)
    n, dim = x.shape
    out = np.zeros((n, padded_dim(dim)), dtype=np.uint8)
    scale = np.float32(1.0 / step)
    for r0 in range(0, n, LEVEL_ROWS):
        v = float32_matrix(x[r0 : r0 + LEVEL_ROWS], "rows")
        v = np.multiply(v, scale, out=np.empty_like(v))
        if up:
            v += _ROUNDING
            np.ceil(v, out=v)
        else:
            v -= _ROUNDING
            np.floor(v, out=v)
        np.nan_to_num(v, copy=False, nan=0.0, posinf=LEVELS, neginf=0.0)
        np.clip(v, 0, LEVELS, out=v)
        out[r0 : r0 + LEVEL_ROWS, :dim] = v
    return out


def image_levels(im: np.ndarray, step: float) -> np.ndarray:
    """Stored bound rows of image embeddings (rounded up)."""
    return _levels(im, step, up=True)


def query_levels(s: np.ndarray, step: float) -> np.ndarray:
    """Bound rows of query embeddings (rounded down)."""
    return _levels(s, step, up=False)


@intrinsic
def _bound_tile(typingctx, q0, q1, q2, q3, i0, i1, i2, i3, chunks, out, limits):
    """Integer bounds of 4 query rows x 4 image rows (byte addresses) over ``chunks`` x 64 bytes.

    The 16 bounds are written as int32 to the address ``out`` (query-major); the
    result has bit 4 r + c set where bound (r, c) is at most the query's limit (int32
    at ``limits`` + 4 r).
    """
    sig = types.int64(*([types.intp] * 11))

    def codegen(context, builder, signature, args):
        module = builder.module
        usub = cgutils.get_or_insert_function(module, ir.FunctionType(_I8x64, [_I8x64, _I8x64]),
                                              "llvm.usub.sat.v64i8")
        dot = cgutils.get_or_insert_function(module, ir.FunctionType(_I32x16, [_I32x16] * 3),
                                             "llvm.x86.avx512.vpdpbusd.512")
        rows = [builder.inttoptr(a, _I8x64.as_pointer()) for a in args[:8]]
        n = args[8]
        entry = builder.basic_block
        head = builder.append_basic_block("bound.head")
        body = builder.append_basic_block("bound.body")
        done = builder.append_basic_block("bound.done")
        builder.branch(head)
        builder.position_at_end(head)
        step = builder.phi(n.type)
        step.add_incoming(ir.Constant(n.type, 0), entry)
        acc = []
        for _ in range(16):
            phi = builder.phi(_I32x16)
            phi.add_incoming(ir.Constant(_I32x16, None), entry)
            acc.append(phi)
        builder.cbranch(builder.icmp_signed("<", step, n), body, done)
        builder.position_at_end(body)
        x = [builder.load(builder.gep(r, [step]), align=1) for r in rows[:4]]
        y = [builder.load(builder.gep(r, [step]), align=1) for r in rows[4:]]
        new = []
        for r in range(4):
            for c in range(4):
                d = builder.bitcast(builder.call(usub, [x[r], y[c]]), _I32x16)
                new.append(builder.call(dot, [acc[4 * r + c], d, d]))
        after = builder.add(step, ir.Constant(n.type, 1))
        builder.branch(head)
        step.add_incoming(after, body)
        for phi, value in zip(acc, new):
            phi.add_incoming(value, body)
        builder.position_at_end(done)
        # Sum each accumulator's lanes by halving rounds of (even lanes + odd lanes) over pairs of
        # accumulators, which leaves the 16 totals in one vector, in accumulator order.
        i32 = ir.IntType(32)
        even = ir.Constant(_I32x16, [ir.Constant(i32, 2 * j) for j in range(16)])
        odd = ir.Constant(_I32x16, [ir.Constant(i32, 2 * j + 1) for j in range(16)])
        level = list(acc)
        while len(level) > 1:
            level = [builder.add(builder.shuffle_vector(a, b, even), builder.shuffle_vector(a, b, odd))
                     for a, b in zip(level[::2], level[1::2])]
        total = level[0]
        builder.store(total, builder.inttoptr(args[9], _I32x16.as_pointer()), align=4)
        four = ir.VectorType(i32, 4)
        limit4 = builder.load(builder.inttoptr(args[10], four.as_pointer()), align=4)
        spread = ir.Constant(_I32x16, [ir.Constant(i32, j // 4) for j in range(16)])
        limit16 = builder.shuffle_vector(limit4, limit4, spread)
        within = builder.icmp_signed("<=", total, limit16)
        mask = builder.bitcast(within, ir.IntType(16))
        return builder.zext(mask, ir.IntType(64))

    return sig, codegen


@njit(boundscheck=False, cache=True)
def bound_matrix(s8: np.ndarray, im8: np.ndarray) -> np.ndarray:
    """Integer bounds ``sum_i max(0, s8[a, i] - im8[b, i])^2`` of padded byte rows (values 0..127)."""
    n, m, width = s8.shape[0], im8.shape[0], s8.shape[1]
    out = np.empty((n, m), dtype=np.int32)
    tile = np.empty(16, dtype=np.int32)
    no_limit = np.zeros(4, dtype=np.int32)
    sa, ia, ta = s8.ctypes.data, im8.ctypes.data, tile.ctypes.data
    for a in range(0, n, 4):
        ra = min(4, n - a)
        for b in range(0, m, 4):
            rb = min(4, m - b)
            _bound_tile(sa + a * width, sa + (a + min(1, ra - 1)) * width, sa + (a + min(2, ra - 1)) * width,
                        sa + (a + min(3, ra - 1)) * width, ia + b * width, ia + (b + min(1, rb - 1)) * width,
                        ia + (b + min(2, rb - 1)) * width, ia + (b + min(3, rb - 1)) * width, width // 64, ta,
                        no_limit.ctypes.data)
            for r in range(ra):
                for c in range(rb):
                    out[a + r, b + c] = tile[4 * r + c]
    return out


@njit(inline="always", cache=True)
def _threshold(e: np.float32, per_unit: float) -> np.int32:
    """Largest integer bound that a pair with error ``e`` or less can have (with the slack)."""
    if not e < np.inf:
        return _NO_LIMIT
    t = math.floor(e * per_unit)
    return np.int32(t) if t < _NO_LIMIT else _NO_LIMIT


@njit(fastmath={"reassoc", "contract"}, parallel=True, boundscheck=False, cache=True)
def _bounded_kernel(q: np.ndarray, q8: np.ndarray, address: int, half: bool, bounds_address: int,
                    n_images: int, first: int, per_unit: float, top_err: np.ndarray, top_idx: np.ndarray,
                    count: np.ndarray, limit: np.ndarray, scored: np.ndarray) -> None:
    """Fold images first..first+n_images-1 into the parts' top-k heaps, scoring only pairs within the limit.

    q: float32 queries; q8: their bound rows, row count a multiple of 4. address:
    the image block (float16 bits if half, else float32); bounds_address: its bound
    rows. limit[r] (int32, one entry per q8 row, -1 for padding rows): the largest
    integer bound that can still enter query r's top-k, shared by the parts.
    scored[p] counts the pairs part p scored exactly.
    """
    n_parts = top_err.shape[0]
    dim = q.shape[1]
    width = q8.shape[1]
    chunks = width // 64
    n_rows = q8.shape[0]
    for p in prange(n_parts):
        b_start = p * n_images // n_parts
        b_end = (p + 1) * n_images // n_parts
        tile = np.empty(16, dtype=np.int32)
        images = np.empty((4, dim), dtype=np.float32)
        pair_r = np.empty(TILE, dtype=np.int64)
        pair_c = np.empty(TILE, dtype=np.int64)
        ta = tile.ctypes.data
        q8a = q8.ctypes.data
        la = limit.ctypes.data
        for g in range(b_start, b_end, 4):
            rb = min(4, b_end - g)
            i0 = bounds_address + g * width
            i1 = bounds_address + (g + min(1, rb - 1)) * width
            i2 = bounds_address + (g + min(2, rb - 1)) * width
            i3 = bounds_address + (g + min(3, rb - 1)) * width
            n_pairs = 0
            block = images[:rb]
            converted = False
            for a in range(0, n_rows, 4):
                qa = q8a + a * width
                mask = _bound_tile(qa, qa + width, qa + 2 * width, qa + 3 * width, i0, i1, i2, i3, chunks, ta,
                                   la + a * 4)
                while mask:
                    j = 0
                    while not (mask >> j) & 1:
                        j += 1
                    mask &= mask - 1
                    if j % 4 >= rb:
                        continue
                    if not converted:
                        if half:
                            bits = numba.carray(u16_at(address + g * dim * 2), (rb, dim))
                            for c in range(rb):
                                for i in range(dim):
                                    images[c, i] = half_to_float(bits[c, i])
                        else:
                            block = numba.carray(f32_at(address + g * dim * 4), (rb, dim))
                        converted = True
                    pair_r[n_pairs] = a + j // 4
                    pair_c[n_pairs] = j % 4
                    n_pairs += 1
                    if n_pairs == TILE:
                        _score_pairs(q, block, pair_r, pair_c, n_pairs, first + g, top_err[p], top_idx[p],
                                     count[p], limit, per_unit)
                        scored[p] += n_pairs
                        n_pairs = 0
            if n_pairs:
                _score_pairs(q, block, pair_r, pair_c, n_pairs, first + g, top_err[p], top_idx[p], count[p],
                             limit, per_unit)
                scored[p] += n_pairs


@njit(fastmath={"reassoc", "contract"}, inline="always", boundscheck=False, cache=True)
def _score_pairs(q: np.ndarray, images: np.ndarray, pair_r: np.ndarray, pair_c: np.ndarray, n: int, first: int,
                 top_err: np.ndarray, top_idx: np.ndarray, count: np.ndarray, limit: np.ndarray,
                 per_unit: float) -> None:
    """Score pairs t = 0..n-1 (query row pair_r[t], image row pair_c[t] numbered first + pair_c[t]) as the
    diagonal of one 4 x 4 tile, offer each to its query's heap and tighten that query's limit."""
    last = n - 1
    diagonal = tile_rows(q, pair_r[0], pair_r[min(1, last)], pair_r[min(2, last)], pair_r[min(3, last)],
                          images, pair_c[0], pair_c[min(1, last)], pair_c[min(2, last)], pair_c[min(3, last)])
    k = top_err.shape[1]
    for t in range(n):
        r = pair_r[t]
        e = diagonal[5 * t]
        if e != e:
            e = np.float32(np.inf)
        held = heap_push(top_err[r], top_idx[r], count[r], e, first + pair_c[t])
        count[r] = held
        if held == k:
            # Any part's k-th best so far bounds the final k-th best from above. Parts share
            # the limit; a lost concurrent update only leaves it larger, which is safe.
            limit[r] = min(limit[r], _threshold(top_err[r, 0], per_unit))


def _sample_rows(im, n_rows: int, pieces: int = 16) -> np.ndarray:
    """About ``n_rows`` rows of ``im`` as float32: ``pieces`` contiguous runs spread evenly over it."""
    n = im.shape[0]
    run = max(1, n_rows // pieces)
    starts = np.linspace(0, n - run, pieces).astype(np.int64)
    return np.concatenate([float32_matrix(np.ascontiguousarray(im[s0 : s0 + run]), "images") for s0 in starts])


def order_topk_bounded(s: np.ndarray, im, bounds, step: float, k: int, progress: bool = False,
                       stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The result of :func:`~order_embedding.kernels.order_topk` (``k`` smallest order-violation errors of
    each query row of ``s`` over the images ``im``), skipping the images whose lower bound rules them out.

    ``im``: n x d float16 or float32 rows, C-contiguous (e.g. an index's memory map);
    ``bounds``: their bound rows from :func:`image_levels` with the same ``step``.
    Both are read block by block. ``stats``, if given, receives the number of pairs
    scored exactly. Needs :func:`supported`.
    """
    if not supported():
        raise RuntimeError("the bound kernel needs a CPU with AVX-512 BW and VNNI")
    s = np.asarray(s)
    if s.ndim != 2 or len(im.shape) != 2 or s.shape[1] != im.shape[1]:
        raise ValueError(f"queries of shape {s.shape} do not match images of shape {tuple(im.shape)}")
    n_q, dim = s.shape
    n_im = im.shape[0]
    if tuple(bounds.shape) != (n_im, padded_dim(dim)) or bounds.dtype != np.uint8:
        raise ValueError(f"bounds of shape {tuple(bounds.shape)} ({bounds.dtype}) do not match "
                         f"{n_im} images of dimension {dim}")
    if im.dtype not in (np.float16, np.float32):
        raise ValueError(f"images must be float16 or float32, got {im.dtype}")
    if padded_dim(dim) > MAX_DIM:
        raise ValueError(f"the bound kernel handles dimensions up to {MAX_DIM}, got {dim}")
    k = positive_int(k, "k", allow_text=False)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"the bound step must be a positive number, got {step!r}")
    k = min(int(k), n_im)
    if n_q == 0 or dim == 0:
        return order_topk(s, np.zeros((n_im, dim), np.float32), k)
    q32 = np.ascontiguousarray(float32_matrix(s, "queries"))
    per_unit = 1.0 / (step * step * (1.0 - SLACK))
    sample = _sample_rows(im, SAMPLE) if n_im >= MIN_IMAGES and k <= SAMPLE // 4 else None
    errors, indices = [], []
    scored_total = 0
    steps = math.ceil(n_q / TOPK_QUERIES) * math.ceil(n_im / BLOCK_ROWS)
    with tqdm(total=steps, desc="top-k", unit="block", disable=not progress) as bar:
        for q0 in range(0, n_q, TOPK_QUERIES):
            queries = q32[q0 : q0 + TOPK_QUERIES]
            n = len(queries)
            q8 = query_levels(np.concatenate([queries, np.zeros((-n % 4, dim), np.float32)]), step)
            limit = np.full(len(q8), -1, dtype=np.int32)
            limit[:n] = _NO_LIMIT
            if sample is not None:
                # The k-th best over some of the images bounds the k-th best over all from above.
                sample_err, _ = order_topk(queries, sample, k)
                limit[:n] = [_threshold(np.float32(e), per_unit) for e in sample_err[:, -1]]
            with threads_for(n * n_im * dim) as threads:
                n_parts = 2 * threads if n_im >= 2 * threads * 4 else 1
                top_err = np.full((n_parts, n, k), np.inf, dtype=np.float32)
                top_idx = np.full((n_parts, n, k), NO_IMAGE, dtype=np.int64)
                count = np.zeros((n_parts, n), dtype=np.int64)
                scored = np.zeros(n_parts, dtype=np.int64)
                for b0 in range(0, n_im, BLOCK_ROWS):
                    b1 = min(b0 + BLOCK_ROWS, n_im)
                    rows = np.ascontiguousarray(im[b0:b1])
                    levels = np.ascontiguousarray(bounds[b0:b1])
                    _bounded_kernel(queries, q8, rows.ctypes.data, rows.dtype == np.float16, levels.ctypes.data,
                                    b1 - b0, b0, per_unit, top_err, top_idx, count, limit, scored)
                    release_pages(im, rows)
                    release_pages(bounds, levels)
                    bar.update()
                scored_total += int(scored.sum())
            e, i = merge_parts(top_err, top_idx, k)
            errors.append(e)
            indices.append(i)
    if stats is not None:
        stats["scored_pairs"] = scored_total
        stats["pairs"] = n_q * n_im
    return np.concatenate(errors), np.concatenate(indices)
