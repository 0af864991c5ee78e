"""The two measures of the paper: the order-violation penalty and the cosine baseline.

A measure is called ``order`` or ``cosine`` everywhere (options, configs, run folders,
Python arguments); :data:`MEASURES` is their one registry. The parameter that names it is
``method`` everywhere (the original's hyperparameter name): options, config fields, JSON
keys (``methods`` for one per model), keyword arguments. The paper's two *models* are
named after them: the order model uses the ``order`` measure, and the symmetric model
uses the ``cosine`` measure. ``symmetric`` is the model's name, never the measure's;
where it was accepted as a measure before, :func:`measure_name` still reads it, with a
deprecation notice, and where the parameter was called ``measure``, :func:`measure_keyword`
still accepts that keyword.

Both return an error matrix ``E[a, b]`` of captions ``s`` against images ``im``
(lower is better) and accept NumPy arrays or torch tensors, returning the same type.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import torch

from .kernels import cosine_topk, gpu, order_error_grads, order_error_matrix, order_topk
from .options import positive_int

Array = TypeVar("Array", np.ndarray, torch.Tensor)
Renamed = TypeVar("Renamed")

#: Caption rows processed at once when broadcasting torch tensors, so that a
#: ``chunk x images x dim`` temporary stays near 64 M elements.
_BROADCAST_ELEMENTS = 1 << 26


def order_violation(s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Row-wise penalty ``sum_i max(0, s_i - im_i)^2`` for aligned rows (differentiable)."""
    return (s - im).clamp(min=0).pow(2).sum(-1)


class _OrderErrorMatrix(torch.autograd.Function):
    """The order-violation error matrix of CPU float32 tensors through the blockwise kernels, forward and
    backward, without the captions x images x dim temporaries of broadcasting."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s, im)
        return torch.from_numpy(order_error_matrix(s.detach().numpy(), im.detach().numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, im = ctx.saved_tensors
        grad_s, grad_im = order_error_grads(s.detach().numpy(), im.detach().numpy(), grad.detach().numpy())
        return torch.from_numpy(grad_s), torch.from_numpy(grad_im)


def _kernel_ready(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2


def order_errors(s: Array, im: Array) -> Array:
    """Order-violation error matrix ``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2``.

    Differentiable for torch tensors: CPU float32 ones go through the blockwise
    kernels both ways, CUDA ones through the path :func:`kernels.gpu.order_path`
    chooses, other devices and dtypes through broadcasting.
    """
    if isinstance(s, np.ndarray):
        return order_error_matrix(s, im)
    if gpu.on_cuda(s, im):
        path = gpu.order_path(s, im)
        if path != "broadcast":
            return gpu.order_errors(s, im, path)
    if s.requires_grad or im.requires_grad:
        if _kernel_ready(s) and _kernel_ready(im) and torch.is_grad_enabled():
            return _OrderErrorMatrix.apply(s, im)
        return order_violation(s.unsqueeze(1), im.unsqueeze(0))
    rows = max(1, _BROADCAST_ELEMENTS // max(1, im.shape[0] * im.shape[1]))
    return torch.cat(
        [order_violation(s[i : i + rows].unsqueeze(1), im.unsqueeze(0)) for i in range(0, s.shape[0], rows)]
    ) if s.shape[0] else s.new_zeros((0, im.shape[0]))


def cosine_errors(s: Array, im: Array) -> Array:
    """Symmetric-baseline error matrix ``E[a, b] = -(s[a] . im[b])`` (inputs already unit length)."""
    return -(s @ im.T)


def cosine_paired(s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Row-wise symmetric-baseline errors ``-(s[a] . im[a])`` of aligned rows (differentiable)."""
    return -(s * im).sum(-1)


def cosine_distance(s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Row-wise ``1 - cos(s[a], im[a])`` of aligned rows of any length (differentiable)."""
    return 1.0 - torch.nn.functional.cosine_similarity(s, im, dim=-1, eps=1e-8)


@dataclass(frozen=True)
class Measure:
    """One of the paper's measures, everything that depends on it in one place.

    ``errors(s, im)``: the captions x images error matrix (NumPy or torch);
    ``paired(s, im)``: row-wise errors of aligned torch rows of unit vectors; ``distance(s, im)``: the
    row-wise error as a non-negative distance for vectors of any length, 0 when ``s`` lies below ``im``
    (order) or points the same way (cosine); ``topk(s, im, k)``: each
    query's ``k`` smallest errors and their image indices, streaming ``im`` in blocks;
    ``label``: the paper's name for the model that uses it.
    """

    name: str
    label: str
    errors: Callable[[Array, Array], Array]
    paired: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    topk: Callable[..., tuple[np.ndarray, np.ndarray]]


#: The measures by the name that configs and run folders record (``method``).
MEASURES: dict[str, Measure] = {
    "order": Measure("order", "order", order_errors, order_violation, order_violation, order_topk),
    "cosine": Measure("cosine", "symmetric", cosine_errors, cosine_paired, cosine_distance, cosine_topk),
}


#: The measure each of the paper's models uses, by the model's name (``order``, ``symmetric``).
MODELS: dict[str, str] = {m.label: m.name for m in MEASURES.values()}


def measure(name: str) -> Measure:
    """The measure called ``name`` (``order`` or ``cosine``); any other name is a one-line error."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown measure {name!r}; choose one of {sorted(MEASURES)}") from None


def measure_name(name: str) -> str:
    """``name`` as a measure's name: ``order`` or ``cosine``; ``symmetric`` (the model that uses the cosine
    measure) is read as ``cosine`` with a deprecation notice; anything else is a one-line error."""
    if name == "symmetric":
        warnings.warn("the measure 'symmetric' is now called 'cosine' (the symmetric model uses the cosine measure)",
                      FutureWarning, stacklevel=3)
        return "cosine"
    return measure(name).name


def model_name(name: str) -> str:
    """The paper's name of the model that uses measure ``name`` (``order`` or ``symmetric``)."""
    return measure(measure_name(name)).label


def _method_keyword(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        if "measure" in kwargs:
            if "method" in kwargs:
                raise TypeError(f"{func.__qualname__}() got both 'method' and its old name 'measure'")
            warnings.warn("the keyword 'measure' is now called 'method'", DeprecationWarning, stacklevel=2)
            kwargs["method"] = kwargs.pop("measure")
        return func(*args, **kwargs)
    return call


def _read_method(self: Any) -> str:
    warnings.warn("the attribute 'measure' is now called 'method'", DeprecationWarning, stacklevel=2)
    return self.method


def measure_keyword(target: Renamed) -> Renamed:
    """A function or class whose ``method`` parameter was called ``measure``: the keyword ``measure=`` is
    still read as ``method=`` (and on a class the attribute ``measure`` as ``method``), with a deprecation
    notice naming ``method``."""
    if isinstance(target, type):
        cls: Any = target
        cls.__init__ = _method_keyword(cls.__init__)
        cls.measure = property(_read_method, doc="Deprecated name of ``method``.")
        return target
    return cast(Renamed, _method_keyword(cast(Callable[..., Any], target)))


def paired_errors(method: str, s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Row-wise errors of aligned rows ``s[a]`` against ``im[a]`` under a measure name."""
    return measure(method).paired(s, im)


#: Images copied to the GPU at a time when :func:`exact_topk` streams them from the host.
DEVICE_BLOCK_BYTES = 1 << 28


def exact_topk(s: np.ndarray, im, method: str, k: int,
               device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(errors, indices)`` of each query's ``k`` best images under a measure, streaming ``im`` in blocks.

    Ascending errors, ties to the lower image index; ``im`` is any 2-D array-like
    (an ``.npy`` read by rows, a memory map), or on a CUDA ``device`` also a tensor
    or packed rows already there. With a CUDA ``device`` the images are scored there
    (host rows copied over in blocks of ``DEVICE_BLOCK_BYTES``).
    """
    k = positive_int(k, "k")
    s = np.asarray(s, dtype=np.float32)
    if s.ndim != 2 or s.shape[1] != im.shape[1]:
        raise ValueError(f"queries of shape {s.shape} do not match {im.shape[1]}-d images")
    if device is not None and torch.device(device).type == "cuda":
        q = torch.from_numpy(s).to(device)
        if not (isinstance(im, torch.Tensor) or gpu.is_packed(im)):
            rows = max(1, DEVICE_BLOCK_BYTES // max(1, im.shape[1] * np.dtype(im.dtype).itemsize))
            im = gpu.host_blocks(im, q.device, rows)
        errors, indices = gpu.device_topk(q, im, int(k), measure(method).errors)
        return errors.cpu().numpy(), indices.cpu().numpy()
    return measure(method).topk(s, im, int(k))
