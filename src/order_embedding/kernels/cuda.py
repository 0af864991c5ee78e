"""CUDA kernels (written in Triton) for the order-violation penalty ``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2``.

``order_error_matrix_cuda`` fills the captions x images matrix, ``order_topk_cuda``
keeps the ``k`` smallest errors of each caption while streaming the images in blocks,
and ``order_error_grads_cuda`` gives the gradients of a weighted sum of the matrix;
none holds a captions x images x dim array. They are the GPU counterparts of
``kernels.order_error_matrix``, ``kernels.order_topk`` and ``kernels.order_error_grads``:
float32 arithmetic (inputs of float16, bfloat16 or float32 are converted to float32
as the kernel loads them), NaN in an input gives NaN errors, and the top-k counts NaN
errors as +inf. :mod:`.gpu` decides when the package calls them.

Triton is optional: this module imports without it, and ``available()`` says whether
the CUDA functions can run. With ``TRITON_INTERPRET=1`` in the environment before
Triton is imported, the same kernels run on CPU tensors through Triton's interpreter
(with the fixed ``INTERPRETER_CONFIG`` instead of autotuning).

Layout: each CUDA thread accumulates a TM x TN sub-tile of pairs in registers, so a
step over one dimension costs TM + TN loads for TM x TN x 3 floating-point
instructions (subtract, maximum, fused multiply-add). The inputs are first copied
("packed") into panels of ``PANEL`` rows stored dimension-major, zero-padded to whole
panels and to a multiple of ``DIM_MULTIPLE`` dimensions (``pack``; rows packed once,
such as an image index held on the GPU, are passed as they are). Then the TM values a thread
needs at one dimension are contiguous (vector loads), every address in the unrolled
inner loop is a constant offset from a few pointers, and no load needs a mask. Zero
padding adds ``max(0, 0 - 0)^2 = 0`` terms, which leave every sum unchanged.
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext

import torch
from tqdm import tqdm

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional; only the CUDA functions below need it.
    triton = None

from ..options import positive_int

#: Rows of one packed panel (every tile's BLOCK_M and BLOCK_N divide it).
PANEL = 128
#: The packed dimension is zero-padded to a multiple of this (every BLOCK_K divides it).
DIM_MULTIPLE = 16
#: Images scored per kernel launch by ``order_topk_cuda`` unless told otherwise.
DEFAULT_TOPK_BLOCK = 4096
#: Rows packed per step by ``Packed.write`` (a multiple of PANEL; bounds the padded temporary).
PACK_ROWS = 1 << 16
#: Most bytes of the top-k candidate buffer (captions x (k + block) int64 keys); more captions go in chunks.
TOPK_BUFFER_BYTES = 1 << 30

#: Tile shapes the autotuner chooses from. A program covers BLOCK_M = TM * GM captions and
#: BLOCK_N = TN * GN images; with GM * GN = 32 * num_warps, Triton's default layout gives
#: each thread TM x TN pairs (one per GM x GN grid cell of the tile).
CONFIGS: tuple[dict[str, int], ...] = (
    {"TM": 8, "TN": 8, "GM": 16, "GN": 16, "BLOCK_K": 8, "STAGES": 1, "num_warps": 8},
    {"TM": 8, "TN": 8, "GM": 16, "GN": 16, "BLOCK_K": 8, "STAGES": 3, "num_warps": 8},
    {"TM": 4, "TN": 8, "GM": 16, "GN": 16, "BLOCK_K": 16, "STAGES": 1, "num_warps": 8},
    {"TM": 8, "TN": 4, "GM": 16, "GN": 16, "BLOCK_K": 16, "STAGES": 1, "num_warps": 8},
)
#: Tile of the gradient kernel: rows x weights x dimensions summed per step (a 3-D block in registers).
GRAD_TILE: dict[str, int] = {"BLOCK_R": 16, "BLOCK_C": 16, "BLOCK_D": 32, "num_warps": 4}
#: The config used without autotuning (under Triton's interpreter).
INTERPRETER_CONFIG: dict[str, int] = dict(CONFIGS[0])
#: A config that replaces autotuning everywhere when set (so that each one can be checked on a GPU).
FIXED_CONFIG: dict[str, int] | None = None

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_NO_TRITON = "the CUDA order kernels need the 'triton' package (pip install triton), which is not importable"

if triton is not None:

    @triton.jit
    def _order_error_kernel(s_ptr, im_ptr, out_ptr, n, m, d, out_row, col_base,
                            TM: tl.constexpr, TN: tl.constexpr, GM: tl.constexpr, GN: tl.constexpr,
                            BLOCK_K: tl.constexpr, STAGES: tl.constexpr, PANEL_ROWS: tl.constexpr,
                            KEYS: tl.constexpr):
        """One BLOCK_M x BLOCK_N tile of errors between packed captions and packed images.

        s_ptr / im_ptr: packed panels (rows / PANEL_ROWS, d, PANEL_ROWS), d a multiple of
        BLOCK_K. Writes out[a, b] for a < n, b < m (row stride out_row): the float32 error,
        or with KEYS the int64 sort key (bits of the error, NaN as +inf) << 32 | (col_base + b).
        """
        BLOCK_M: tl.constexpr = TM * GM
        BLOCK_N: tl.constexpr = TN * GN
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        # acc[a, b, i, j] is caption i * TM + a against image j * TN + b of the tile: the
        # thread dimensions (i, j) come last, so each thread holds the TM x TN pairs (a, b).
        a = tl.arange(0, TM)[:, None, None, None]
        b = tl.arange(0, TN)[None, :, None, None]
        i = tl.arange(0, GM)[None, None, :, None]
        j = tl.arange(0, GN)[None, None, None, :]
        rm = pid_m * BLOCK_M + i * TM + a
        rn = pid_n * BLOCK_N + j * TN + b
        xp = s_ptr + (rm // PANEL_ROWS).to(tl.int64) * d * PANEL_ROWS + rm % PANEL_ROWS
        yp = im_ptr + (rn // PANEL_ROWS).to(tl.int64) * d * PANEL_ROWS + rn % PANEL_ROWS
        acc = tl.zeros((TM, TN, GM, GN), dtype=tl.float32)
        for _ in tl.range(0, d, BLOCK_K, num_stages=STAGES):
            for kk in tl.static_range(BLOCK_K):
                x = tl.load(xp + kk * PANEL_ROWS).to(tl.float32)
                y = tl.load(yp + kk * PANEL_ROWS).to(tl.float32)
                t = tl.maximum(x - y, 0.0, propagate_nan=tl.PropagateNan.ALL)
                acc = tl.fma(t, t, acc)
            xp += BLOCK_K * PANEL_ROWS
            yp += BLOCK_K * PANEL_ROWS
        out = out_ptr + rm.to(tl.int64) * out_row + rn
        mask = (rm < n) & (rn < m)
        if KEYS:
            # Errors are >= +0 (or NaN), so their bit patterns sort like their values.
            error = tl.where(acc != acc, float("inf"), acc)
            bits = error.to(tl.int32, bitcast=True).to(tl.int64)
            tl.store(out, (bits << 32) | (col_base + rn).to(tl.int64), mask=mask)
        else:
            tl.store(out, acc, mask=mask)

    _tuned_error_kernel = triton.autotune(
        configs=[
            triton.Config({k: v for k, v in c.items() if k != "num_warps"}, num_warps=c["num_warps"])
            for c in CONFIGS
        ],
        key=["n", "m", "d"],
    )(_order_error_kernel)

    @triton.jit
    def _order_grad_kernel(x_ptr, y_ptr, w_ptr, out_ptr, n_rows, n_cols, d, x_row, y_row, w_row, w_col, out_row,
                           scale, FLIP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                           BLOCK_D: tl.constexpr):
        """out[r, i] = scale * sum_c w[r, c] * max(0, x[r, i] - y[c, i]) (with FLIP: max(0, y[c, i] - x[r, i])).

        x (n_rows x d), y (n_cols x d) and out have unit column stride; w is addressed by
        (w_row, w_col), so a transposed weight matrix needs no copy. Zero weights add
        nothing, whatever the difference (so an inactive hinge never spreads a NaN).
        """
        r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        i = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        r_ok = r < n_rows
        i_ok = i < d
        x = tl.load(x_ptr + r[:, None].to(tl.int64) * x_row + i[None, :], mask=r_ok[:, None] & i_ok[None, :],
                    other=0.0).to(tl.float32)
        acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
        for c0 in range(0, n_cols, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            c_ok = c < n_cols
            y = tl.load(y_ptr + c[:, None].to(tl.int64) * y_row + i[None, :], mask=c_ok[:, None] & i_ok[None, :],
                        other=0.0).to(tl.float32)
            w = tl.load(w_ptr + r[:, None].to(tl.int64) * w_row + c[None, :].to(tl.int64) * w_col,
                        mask=r_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
            if FLIP:
                t = y[None, :, :] - x[:, None, :]
            else:
                t = x[:, None, :] - y[None, :, :]
            t = tl.maximum(t, 0.0, propagate_nan=tl.PropagateNan.ALL)
            ww = w[:, :, None]
            acc += tl.sum(tl.where(ww != 0, ww * t, 0.0), axis=1)
        tl.store(out_ptr + r[:, None].to(tl.int64) * out_row + i[None, :], acc * scale,
                 mask=r_ok[:, None] & i_ok[None, :])


def available() -> bool:
    """Whether the CUDA functions can run here: Triton is importable and torch sees a CUDA device."""
    return triton is not None and torch.cuda.is_available()


def _interpreting() -> bool:
    """Whether Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _check_matrix(x: object, name: str, caller: str) -> None:
    """Raise a one-line error unless ``x`` is a 2-D float16, bfloat16 or float32 tensor, or packed rows."""
    if isinstance(x, Packed):
        return
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{caller}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{caller}: {name} must be a 2-D matrix of row vectors, got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"{caller}: {name} must be float16, bfloat16 or float32, got {x.dtype}")


def _check(s: torch.Tensor | Packed, im: torch.Tensor | Packed, caller: str) -> None:
    """Raise a one-line error unless Triton is importable and s and im are matching matrices of a supported dtype."""
    if triton is None:
        raise RuntimeError(f"{caller}: {_NO_TRITON}")
    _check_matrix(s, "captions", caller)
    _check_matrix(im, "images", caller)
    if s.shape[1] != im.shape[1]:
        raise ValueError(f"{caller}: captions have dimension {s.shape[1]} but images have dimension {im.shape[1]}")
    if s.device != im.device:
        raise ValueError(f"{caller}: captions are on {s.device} but images are on {im.device}")


def _check_device(device: torch.device, caller: str) -> None:
    """Raise a one-line error unless the kernels can run on ``device`` (any device under the interpreter)."""
    if _interpreting():
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"{caller}: no CUDA device is available to torch")
    if device.type != "cuda":
        raise ValueError(f"{caller}: captions and images must be on a CUDA device, got {device}")


class Packed:
    """Rows copied once into the kernels' panel layout (see the module docstring), to be scored many times.

    ``panels`` is (ceil(rows / PANEL), dim padded to DIM_MULTIPLE, PANEL), zero outside
    the rows; ``shape``, ``dtype`` and ``device`` describe the rows it holds. An image
    index held on the GPU is kept packed, so a search does not copy it again.
    """

    def __init__(self, rows: int, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"packed rows must be float16, bfloat16 or float32, got {dtype}")
        self.shape = (rows, dim)
        self.panels = torch.zeros((math.ceil(rows / PANEL), math.ceil(dim / DIM_MULTIPLE) * DIM_MULTIPLE, PANEL),
                                  dtype=dtype, device=device)

    @property
    def dtype(self) -> torch.dtype:
        return self.panels.dtype

    @property
    def device(self) -> torch.device:
        return self.panels.device

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, first: int, x: torch.Tensor) -> None:
        """Store rows ``x`` (on any device, any real dtype) as rows ``first ..`` (``first`` a multiple of PANEL)."""
        if first % PANEL or x.ndim != 2 or x.shape[1] != self.shape[1] or first + x.shape[0] > self.shape[0]:
            raise ValueError(f"cannot store {tuple(x.shape)} rows at row {first} of packed {self.shape} "
                             f"(the first row must be a multiple of {PANEL})")
        dim = self.shape[1]
        for r0 in range(0, x.shape[0], PACK_ROWS):
            part = x[r0 : r0 + PACK_ROWS].to(device=self.device, dtype=self.dtype)
            padded = torch.zeros((math.ceil(part.shape[0] / PANEL) * PANEL, self.panels.shape[1]),
                                 dtype=self.dtype, device=self.device)
            padded[: part.shape[0], :dim] = part
            p0 = (first + r0) // PANEL
            self.panels[p0 : p0 + padded.shape[0] // PANEL] = padded.view(-1, PANEL, padded.shape[1]).transpose(1, 2)


def pack(x: torch.Tensor | Packed) -> Packed:
    """``x`` (rows x d) in the kernels' panel layout, on its device and in its dtype (packed rows are returned as they are)."""
    if isinstance(x, Packed):
        return x
    packed = Packed(x.shape[0], x.shape[1], x.dtype, x.device)
    packed.write(0, x)
    return packed


def _launch(sp: torch.Tensor, imp: torch.Tensor, out: torch.Tensor, n: int, m: int, col_base: int,
            keys: bool) -> None:
    """Fill out[:n, :m] (row stride out.stride(0)) from packed captions sp and packed images imp."""
    d = sp.shape[1]
    if _interpreting() or FIXED_CONFIG is not None:
        config = dict(FIXED_CONFIG or INTERPRETER_CONFIG)
        fixed = (triton.cdiv(n, config["TM"] * config["GM"]), triton.cdiv(m, config["TN"] * config["GN"]))
        with torch.cuda.device(sp.device) if sp.device.type == "cuda" else nullcontext():
            _order_error_kernel[fixed](sp, imp, out, n, m, d, out.stride(0), col_base, PANEL_ROWS=PANEL, KEYS=keys,
                                      **config)
    else:
        def tuned_grid(meta: dict) -> tuple[int, int]:
            return triton.cdiv(n, meta["TM"] * meta["GM"]), triton.cdiv(m, meta["TN"] * meta["GN"])

        with torch.cuda.device(sp.device):
            _tuned_error_kernel[tuned_grid](sp, imp, out, n, m, d, out.stride(0), col_base, PANEL_ROWS=PANEL, KEYS=keys)


def order_error_matrix_cuda(s: torch.Tensor | Packed, im: torch.Tensor | Packed) -> torch.Tensor:
    """``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2`` for captions ``s`` (n x d) and images ``im`` (m x d).

    ``s`` and ``im`` are float16, bfloat16 or float32 tensors on one CUDA device (any
    layout), or rows packed by :func:`pack`. Returns a contiguous float32 n x m tensor
    on that device; NaN in an input gives NaN in the affected entries.
    """
    _check(s, im, "order_error_matrix_cuda")
    _check_device(s.device, "order_error_matrix_cuda")
    n, m = s.shape[0], im.shape[0]
    out = torch.empty((n, m), dtype=torch.float32, device=s.device)
    if out.numel() == 0:
        return out
    if s.shape[1] == 0:
        return out.zero_()
    _launch(pack(s).panels, pack(im).panels, out, n, m, 0, keys=False)
    return out


def order_topk_cuda(s: torch.Tensor | Packed, im: torch.Tensor | Packed, k: int, block: int = DEFAULT_TOPK_BLOCK,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest order-violation errors of each caption row of ``s`` over all images ``im``.

    Returns ``(errors, indices)``, float32 and int64 tensors of shape
    ``n_captions x min(k, n_images)`` on the inputs' CUDA device, each row in ascending
    error with ties broken by the lower image index (NaN errors count as +inf and are
    returned as +inf). The errors are the same float32 numbers
    ``order_error_matrix_cuda`` gives. Images are scored ``block`` at a time (rounded up
    to a multiple of ``PANEL``) and merged with each caption's running best; the
    captions x (k + block) buffer of candidates is kept within ``TOPK_BUFFER_BYTES`` by
    taking the captions in chunks, so besides the packed copies of the inputs (none for
    inputs packed by :func:`pack`) memory does not grow with the number of images.
    ``progress`` shows a progress bar over the blocks.
    """
    _check(s, im, "order_topk_cuda")
    k = positive_int(k, "order_topk_cuda: k", allow_text=False)
    block = positive_int(block, "order_topk_cuda: block", allow_text=False)
    _check_device(s.device, "order_topk_cuda")
    n, m = s.shape[0], im.shape[0]
    if m >= 1 << 31:
        raise ValueError(f"order_topk_cuda: at most 2**31 - 1 images are supported, got {m}")
    k = min(k, m)
    device = s.device
    if n == 0 or k == 0:
        return (torch.empty((n, k), dtype=torch.float32, device=device),
                torch.empty((n, k), dtype=torch.int64, device=device))
    if s.shape[1] == 0:
        return (torch.zeros((n, k), dtype=torch.float32, device=device),
                torch.arange(k, device=device).repeat(n, 1))
    block = math.ceil(min(block, m) / PANEL) * PANEL
    rows = max(PANEL, TOPK_BUFFER_BYTES // (8 * (k + block)) // PANEL * PANEL)
    sp, imp = pack(s).panels, pack(im).panels
    keys = torch.empty((n, k), dtype=torch.int64, device=device)
    steps = math.ceil(n / rows) * math.ceil(m / block)
    with tqdm(total=steps, desc="top-k", unit="block", disable=not progress) as bar:
        for q0 in range(0, n, rows):
            q1 = min(q0 + rows, n)
            # Columns :k hold the running best keys, columns k: the current block's keys.
            buffer = torch.empty((q1 - q0, k + block), dtype=torch.int64, device=device)
            buffer[:, :k] = torch.iinfo(torch.int64).max
            for b0 in range(0, m, block):
                b1 = min(b0 + block, m)
                _launch(sp[q0 // PANEL:], imp[b0 // PANEL:], buffer[:, k:], q1 - q0, b1 - b0, b0, keys=True)
                width = k + (b1 - b0)
                buffer[:, :k] = torch.topk(buffer[:, :width], k, dim=1, largest=False, sorted=True).values
                bar.update()
            keys[q0:q1] = buffer[:, :k]
    errors = (keys >> 32).to(torch.int32).view(torch.float32)
    return errors, keys & 0xFFFFFFFF


def _grad_launch(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, w_row: int, w_col: int, scale: float,
                 flip: bool) -> torch.Tensor:
    """``scale * sum_c w[r, c] max(0, +-(x[r] - y[c]))`` for every row of x (float32, contiguous rows)."""
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    if out.numel() == 0:
        return out
    tile = GRAD_TILE
    grid = (triton.cdiv(x.shape[0], tile["BLOCK_R"]), triton.cdiv(x.shape[1], tile["BLOCK_D"]))
    _order_grad_kernel[grid](x, y, w, out, x.shape[0], y.shape[0], x.shape[1], x.stride(0), y.stride(0), w_row, w_col,
                             out.stride(0), scale, FLIP=flip, **tile)
    return out


def order_error_grads_cuda(s: torch.Tensor, im: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``sum_ab g[a, b] E[a, b]`` (``E`` from :func:`order_error_matrix_cuda`) with respect to ``s`` and ``im``.

    ``grad_s[a] = 2 sum_b g[a, b] max(0, s[a] - im[b])``, ``grad_im[b] = -2 sum_a g[a, b] max(0, s[a] - im[b])``,
    with zero weights skipped (as :func:`order_embedding.kernels.order_error_grads` does
    on CPU). Float32 results of the shapes of ``s`` and ``im``, on their CUDA device;
    the n x m x d array of differences is never formed.
    """
    _check(s, im, "order_error_grads_cuda")
    _check_device(s.device, "order_error_grads_cuda")
    if not isinstance(g, torch.Tensor) or g.shape != (s.shape[0], im.shape[0]):
        raise ValueError(f"order_error_grads_cuda: weights must be a {s.shape[0]} x {im.shape[0]} tensor")
    s32, im32 = s.float().contiguous(), im.float().contiguous()
    g32 = g.float()
    with torch.cuda.device(s.device) if s.device.type == "cuda" else nullcontext():
        grad_s = _grad_launch(s32, im32, g32, g32.stride(0), g32.stride(1), 2.0, flip=False)
        grad_im = _grad_launch(im32, s32, g32, g32.stride(1), g32.stride(0), -2.0, flip=True)
    return grad_s, grad_im
