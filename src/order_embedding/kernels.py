"""Blockwise order-violation error matrices that never build captions x images x dim."""
from __future__ import annotations

import numpy as np
import torch


def order_error_matrix(s: np.ndarray, im: np.ndarray) -> np.ndarray:
    """``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2`` as float32."""
    from .measures import order_errors

    return order_errors(torch.from_numpy(np.ascontiguousarray(s, np.float32)),
                        torch.from_numpy(np.ascontiguousarray(im, np.float32))).numpy()
