"""The losses: the paper's contrastive margin loss (with the VSE++ hardest-negative option) and the hinge
loss of labelled pairs that the hypernym and entailment experiments train with."""
from __future__ import annotations

import torch

from . import measures


@measures.measure_keyword
def contrastive_loss(
    s: torch.Tensor,
    im: torch.Tensor,
    method: str = "order",
    margin: float = 0.05,
    max_violation: bool = False,
) -> torch.Tensor:
    """Summed hinge loss over an aligned batch of caption rows ``s`` and image rows ``im``.

    With ``E[a, b]`` the error of caption ``a`` against image ``b``, the loss is
    ``sum_{a != b} max(0, m - E[a, b] + E[a, a]) + max(0, m - E[a, b] + E[b, b])``;
    with ``max_violation`` each sum over negatives becomes its maximum (VSE++); ``method`` names the
    measure (``order`` or ``cosine``).
    """
    if s.shape != im.shape:
        raise ValueError(f"caption and image batches differ in shape: {tuple(s.shape)} vs {tuple(im.shape)}")
    errors = measures.measure(method).errors(s, im)
    diagonal = errors.diagonal()
    off = ~torch.eye(errors.shape[0], dtype=torch.bool, device=errors.device)
    cost_im = (margin - errors + diagonal.view(-1, 1)).clamp(min=0) * off
    cost_s = (margin - errors + diagonal.view(1, -1)).clamp(min=0) * off
    if max_violation:
        return cost_im.max(dim=1).values.sum() + cost_s.max(dim=0).values.sum()
    return cost_im.sum() + cost_s.sum()


def pair_hinge_loss(errors: torch.Tensor, positive: torch.Tensor, margin: float, reduction: str = "mean") -> torch.Tensor:
    """Hinge loss of labelled pairs: ``E`` for a positive pair, ``max(0, margin - E)`` for a negative one,
    summed or averaged over the batch (``reduction`` ``"sum"`` or ``"mean"``)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    losses = torch.where(positive.to(torch.bool), errors, (margin - errors).clamp(min=0))
    return losses.sum() if reduction == "sum" else losses.mean()
