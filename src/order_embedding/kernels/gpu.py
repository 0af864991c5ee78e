"""What runs when tensors are on a CUDA device: the choice of path, and exact top-k kept on the device.

:func:`on_cuda` is the one device check the measures, evaluation and search call;
CPU tensors and NumPy arrays never reach this module's paths. For the order-violation
error matrix the paths are:

- ``"triton"``: the kernels of :mod:`.cuda` (forward, and for training the gradient
  kernel too), with no captions x images x dim temporary;
- ``"chunked"``: torch broadcasting over a few caption rows at a time, forward and
  backward written out, so the temporary stays near ``CHUNK_ELEMENTS``;
- ``"broadcast"``: autograd through the whole n x m x d difference (VSE++'s way),
  which the measures compute themselves.

Without gradients the Triton kernel is used whenever Triton is importable. Training's
path is :data:`TRAINING_PATH`, the one place where that choice is made.

Exact top-k on the device orders ``(error, index)`` pairs through one int64 key per
pair (:func:`sort_keys`), so ties go to the lower index and NaN errors count as
+inf, as on the CPU.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .cuda import Packed

#: The error-matrix paths on CUDA (see the module docstring).
TRAINING_PATHS = ("triton", "chunked", "broadcast")
#: The path the training loss's error matrix takes on CUDA, forward and backward.
TRAINING_PATH = "broadcast"
#: Elements (rows x images x dim) of one broadcast chunk of the "chunked" path.
CHUNK_ELEMENTS = 1 << 26
#: Most bytes of one block's int64 keys (queries x images) in :func:`device_topk`.
KEY_BYTES = 1 << 30


def kernels() -> ModuleType:
    """The Triton kernels' module, imported on first use (importing Triton takes about half a second)."""
    return importlib.import_module(".cuda", __package__)


def is_packed(x: object) -> bool:
    """Whether ``x`` is rows packed for the Triton kernels (without importing them when it cannot be)."""
    return type(x).__name__ == "Packed" and type(x).__module__ == f"{__package__}.cuda"


def on_cuda(*xs: object) -> bool:
    """Whether any of ``xs`` is a torch tensor on a CUDA device (the check every GPU dispatch goes through)."""
    return any(isinstance(x, torch.Tensor) and x.device.type == "cuda" for x in xs)


def use_training_path(name: str) -> None:
    """Make ``name`` (one of :data:`TRAINING_PATHS`) the training loss's path on CUDA."""
    global TRAINING_PATH
    if name not in TRAINING_PATHS:
        raise ValueError(f"unknown CUDA training path {name!r}; choose one of {', '.join(TRAINING_PATHS)}")
    TRAINING_PATH = name


def _triton_fits(s: torch.Tensor, im: torch.Tensor, grad: bool) -> bool:
    if kernels().triton is None or s.ndim != 2 or im.ndim != 2:
        return False
    if grad:
        return s.dtype == im.dtype == torch.float32
    return all(x.dtype in (torch.float16, torch.bfloat16, torch.float32) for x in (s, im))


def order_path(s: torch.Tensor, im: torch.Tensor) -> str:
    """The path (one of :data:`TRAINING_PATHS`) the order error matrix of CUDA tensors ``s``, ``im`` takes."""
    grad = torch.is_grad_enabled() and (s.requires_grad or im.requires_grad)
    if not grad:
        return "triton" if _triton_fits(s, im, grad=False) else "broadcast"
    if TRAINING_PATH == "triton" and not _triton_fits(s, im, grad=True):
        return "chunked"
    return TRAINING_PATH


class _TritonOrderErrors(torch.autograd.Function):
    """The order error matrix through the Triton kernels, forward and backward."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s, im)
        return kernels().order_error_matrix_cuda(s.detach(), im.detach())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, im = ctx.saved_tensors
        return kernels().order_error_grads_cuda(s.detach(), im.detach(), grad)


def _violations(s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """``max(0, s[a] - im[b])`` for every pair: rows x images x dim."""
    return (s.unsqueeze(1) - im.unsqueeze(0)).clamp(min=0)


def _chunk_rows(im: torch.Tensor) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, im.shape[0] * im.shape[1]))


class _ChunkedOrderErrors(torch.autograd.Function):
    """The order error matrix by broadcasting a few caption rows at a time, gradients written out the same way."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s, im)
        rows = _chunk_rows(im)
        out = s.new_empty((s.shape[0], im.shape[0]))
        for a in range(0, s.shape[0], rows):
            out[a : a + rows] = _violations(s[a : a + rows], im).pow(2).sum(-1)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, im = ctx.saved_tensors
        grad_s = torch.empty_like(s)
        grad_im = torch.zeros_like(im)
        rows = _chunk_rows(im)
        for a in range(0, s.shape[0], rows):
            v = _violations(s[a : a + rows], im)
            g = grad[a : a + rows]
            # As on the CPU and in the Triton kernel, a zero weight adds nothing (no NaN from an inactive hinge).
            weighted = torch.where(g.unsqueeze(-1) != 0, g.unsqueeze(-1) * v, v.new_zeros(()))
            grad_s[a : a + rows] = 2 * weighted.sum(1)
            grad_im -= 2 * weighted.sum(0)
        return grad_s, grad_im


def order_errors(s: torch.Tensor, im: torch.Tensor, path: str) -> torch.Tensor:
    """The order error matrix of ``s`` and ``im`` by ``path`` ("triton" or "chunked"; "broadcast" is the measures' own)."""
    if path == "triton":
        if torch.is_grad_enabled() and (s.requires_grad or im.requires_grad):
            return _TritonOrderErrors.apply(s, im)
        return kernels().order_error_matrix_cuda(s, im)
    if path == "chunked":
        return _ChunkedOrderErrors.apply(s, im)
    raise ValueError(f"order_errors: path {path!r} is not computed here; choose 'triton' or 'chunked'")


# ------------------------------------------------------------------ top-k on the device


def sort_keys(errors: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """One int64 per (error, index) pair whose ascending order is (error, then index) ascending.

    NaN errors become +inf and -0 becomes +0 first; ``indices`` are below 2**31. The
    high 32 bits are the float32 error's bits mapped to a signed integer of the same
    order (negative floats have their other bits flipped), the low 32 the index.
    """
    e = torch.nan_to_num(errors.float(), nan=float("inf"), posinf=float("inf"), neginf=float("-inf")) + 0.0
    bits = e.view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.to(torch.int64) << 32) | indices.to(torch.int64)


def from_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 errors and int64 indices that :func:`sort_keys` packed into ``keys``."""
    bits = (keys >> 32).to(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.view(torch.float32), keys & 0xFFFFFFFF


def _merge(best: torch.Tensor | None, keys: torch.Tensor, k: int) -> torch.Tensor:
    both = keys if best is None else torch.cat([best, keys], dim=1)
    return torch.topk(both, min(k, both.shape[1]), dim=1, largest=False, sorted=True).values


def device_topk(queries: torch.Tensor, images: torch.Tensor | Packed | Iterable[tuple[int, torch.Tensor]],
                k: int, errors: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                block: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest errors of each query row and their image indices, computed on the queries' device.

    ``images`` is a tensor on that device, rows packed by ``kernels().pack`` (order
    measure: the fused Triton top-k), or an iterable of ``(first row, block tensor)``
    streamed in (converted to the queries' dtype). ``errors(q, block)`` gives the queries x block error matrix. Ascending,
    ties to the lower index, NaN as +inf; ``(errors, indices)`` float32 and int64 on
    the device.
    """
    n = queries.shape[0]
    if is_packed(images):
        return kernels().order_topk_cuda(queries, images, k, block=max(1, KEY_BYTES // (8 * max(1, n))))
    if isinstance(images, torch.Tensor):
        rows = block or max(1, KEY_BYTES // (8 * max(1, n)))
        whole = images
        blocks: Iterable[tuple[int, torch.Tensor]] = ((b0, whole[b0 : b0 + rows]) for b0 in range(0, len(whole), rows))
    else:
        blocks = images  # type: ignore[assignment]  # the packed case returned above
    best = None
    for first, part in blocks:
        e = errors(queries, part.to(queries.dtype))  # float16 rows are scored in the queries' precision, as on the CPU
        index = torch.arange(first, first + part.shape[0], device=queries.device).expand(n, -1)
        best = _merge(best, sort_keys(e, index), k)
    if best is None:
        return (torch.empty((n, 0), dtype=torch.float32, device=queries.device),
                torch.empty((n, 0), dtype=torch.int64, device=queries.device))
    return from_keys(best)


def host_blocks(rows: object, device: torch.device, block: int) -> Iterable[tuple[int, torch.Tensor]]:
    """``(first row, rows as a tensor on device)`` for consecutive blocks of a 2-D array-like (an ``.npy`` read by rows)."""
    n = rows.shape[0]  # type: ignore[attr-defined]
    for b0 in range(0, n, block):
        part = np.require(rows[b0 : b0 + block], requirements=["C", "W"])  # type: ignore[index]
        yield b0, torch.from_numpy(part).to(device)
