"""The two measures of the paper: the order-violation penalty and the cosine baseline.

Both return an error matrix ``E[a, b]`` of captions ``s`` against images ``im``
(lower is better) and accept NumPy arrays or torch tensors, returning the same type.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

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
        from .kernels import order_error_matrix

        ctx.save_for_backward(s, im)
        return torch.from_numpy(order_error_matrix(s.detach().numpy(), im.detach().numpy()))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from .kernels import order_error_grads

        s, im = ctx.saved_tensors
        grad_s, grad_im = order_error_grads(s.detach().numpy(), im.detach().numpy(), grad.detach().numpy())
        return torch.from_numpy(grad_s), torch.from_numpy(grad_im)


def _kernel_ready(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2


def order_errors(s: Array, im: Array) -> Array:
    """Order-violation error matrix ``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2``.

    Differentiable for torch tensors: CPU float32 ones go through the blockwise
    kernels both ways, other devices and dtypes through broadcasting.
    """
    if isinstance(s, np.ndarray):
        from .kernels import order_error_matrix

        return order_error_matrix(s, im)
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


MEASURES = {"order": order_errors, "cosine": cosine_errors}


def paired_errors(method: str, s: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Row-wise errors of aligned rows ``s[a]`` against ``im[a]`` under a measure name."""
    if method == "order":
        return order_violation(s, im)
    errors_for(method)
    return -(s * im).sum(-1)


def errors_for(method: str):
    """The error-matrix function for a measure name (``order`` or ``cosine``)."""
    try:
        return MEASURES[method]
    except KeyError:
        raise ValueError(f"unknown measure {method!r}; choose one of {sorted(MEASURES)}") from None
