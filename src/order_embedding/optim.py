"""Optimisation rules of the original driver: its Adam variant and its gradient clipping.

The original's ``adam`` (reference section 8) is not textbook Adam: with ``g`` the
clipped gradient and ``t`` the update count from 1,

    m_t = 0.1 g + 0.9 m_{t-1}
    v_t = 0.001 g^2 + 0.999 v_{t-1}
    lr_t = lr sqrt(1 - 0.001^t) / (1 - 0.1^t)
    p_t = p_{t-1} - lr_t m_t / (sqrt(v_t) + 1e-8)

The bias correction uses 0.1^t and 0.001^t instead of 0.9^t and 0.999^t, so it
corrects almost nothing: the first steps are several times textbook Adam's (3.5x at
t = 1, 6.5x at t = 10, 3.2x at t = 100, 1.26x at t = 1,000). The published models
were trained with it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class AdamOriginal(torch.optim.Optimizer):
    """The original driver's Adam rule (module docstring), exactly; one step count per parameter.

    State per parameter: ``step`` (a float32 scalar tensor), ``exp_avg`` (m) and
    ``exp_avg_sq`` (v), the names torch's Adam uses, so checkpoints store both alike.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.001, b1: float = 0.1, b2: float = 0.001,
                 eps: float = 1e-8) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        super().__init__(params, {"lr": lr, "b1": b1, "b2": b2, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One update of every parameter that has a gradient."""
        if closure is not None:
            raise ValueError("AdamOriginal takes no closure")
        for group in self.param_groups:
            b1, b2, eps = group["b1"], group["b2"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = int(state["step"].item())
                g = p.grad
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(1.0 - b1).add_(g, alpha=b1)
                v.mul_(1.0 - b2).addcmul_(g, g, value=b2)
                lr_t = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-lr_t)


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """``adam_original`` (the original driver's rule) or ``adam`` (textbook: β 0.9, 0.999, ε 1e-8)."""
    if name == "adam_original":
        return AdamOriginal(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    raise ValueError(f"optimizer {name!r} is not supported (only 'adam' or 'adam_original')")


def scheduled_lr(lr: float, lr_update: int | None, epoch: int) -> float:
    """The learning rate of 0-based ``epoch``: VSE++'s schedule, ``lr`` divided by 10 every
    ``lr_update`` epochs (``lr * 0.1 ** (epoch // lr_update)``); ``None`` keeps ``lr`` (the original)."""
    return lr if lr_update is None else lr * 0.1 ** (epoch // lr_update)


def clip_pieces(net: torch.nn.Module) -> list[torch.Tensor]:
    """The gradient tensors that per-tensor clipping rescales one by one, as views into ``.grad``.

    Every trainable parameter's gradient is one piece, except that each ``nn.GRU``'s fused
    tensors (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) split into the gate rows
    (reset and update, the original's ``encoder_W``, ``encoder_U``, ``encoder_b``) and the
    candidate rows (``encoder_Wx``, ``encoder_Ux``, ``encoder_bx``). Call after ``backward``.
    """
    pieces: list[torch.Tensor] = []
    seen: set[int] = set()
    for module in net.modules():
        split = 2 * module.hidden_size if isinstance(module, torch.nn.GRU) else None
        for p in module.parameters(recurse=False):
            if id(p) in seen or not p.requires_grad or p.grad is None:
                continue
            seen.add(id(p))
            pieces += [p.grad] if split is None else [p.grad[:split], p.grad[split:]]
    return pieces


def clip_gradients(net: torch.nn.Module, grad_clip: float, mode: str = "tensor") -> None:
    """Rescale gradients after ``backward``: the original's per-tensor rule, or one global norm.

    ``tensor``: each piece of :func:`clip_pieces` whose squared L2 norm exceeds
    ``grad_clip**2`` is rescaled to norm ``grad_clip`` (the original's ``maxnorm``).
    ``global``: all gradients together, by their joint norm. ``grad_clip <= 0`` clips nothing.
    """
    if grad_clip <= 0:
        return
    if mode == "global":
        torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], grad_clip)
        return
    if mode != "tensor":
        raise ValueError(f"clip_mode must be 'tensor' or 'global', not {mode!r}")
    with torch.no_grad():
        for g in clip_pieces(net):
            squared = (g * g).sum()
            g.mul_(torch.where(squared > grad_clip**2, grad_clip / squared.sqrt(), 1.0))


def flushing_denormals() -> bool:
    """Whether float arithmetic on the calling thread flushes subnormal results to zero."""
    return bool(torch.tensor(torch.finfo(torch.float32).tiny) * 0.5 == 0)


@contextmanager
def flush_denormals() -> Iterator[bool]:
    """Flush subnormal floats to zero on this CPU thread inside the block, then restore the caller's setting.

    Adam's moments of parameters (or embedding rows) that get no gradient decay geometrically
    into the subnormal range, where x86 arithmetic is many times slower; flushed, they become
    exact zeros instead, which changes nothing but the last bits of steps below ~1e-38. Yields
    whether the CPU supports flushing (``torch.set_flush_denormal``). The setting is per thread:
    it covers the calling thread, which does all the work with one torch thread; the workers of
    torch's intra-op thread pool keep their own setting.
    """
    before = flushing_denormals()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)
