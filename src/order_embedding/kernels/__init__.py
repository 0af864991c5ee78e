"""Blockwise kernels for the order-violation penalty: CPU (numba), lower-bound skipping, CUDA (Triton).

:mod:`.cpu` fills error matrices, their gradients and streamed top-k lists without
captions x images x dim temporaries; :mod:`.bounds` is the exact top-k that skips
images through 7-bit lower bounds; :mod:`.cuda` holds the Triton versions for CUDA
tensors (error matrix, its gradients, top-k); :mod:`.gpu` chooses what CUDA tensors
run and keeps top-k on the device; :mod:`.common` is what the CPU kernels share.
"""
from .cpu import (
    as_float32,
    cosine_topk,
    order_error_grads,
    order_error_matrix,
    order_topk,
)

__all__ = ["as_float32", "cosine_topk", "order_error_grads", "order_error_matrix", "order_topk"]
