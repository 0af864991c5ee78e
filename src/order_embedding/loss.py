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
    matches: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed hinge loss over an aligned batch of caption rows ``s`` and image rows ``im``.

    With ``E[a, b]`` the error of caption ``a`` against image ``b``, the loss is
    ``sum_{a != b} max(0, m - E[a, b] + E[a, a]) + max(0, m - E[a, b] + E[b, b])``;
    with ``max_violation`` each sum over negatives becomes its maximum (VSE++); ``method`` names the
    measure (``order`` or ``cosine``).

    ``matches`` (a boolean batch x batch matrix, ``True`` on the diagonal) marks every image each caption is
    known to describe: those are positives, never negatives. Each caption's hinge terms are then averaged
    over its positives, ``sum_a mean_{p: M[a,p]} sum_{n: not M[a,n]} max(0, m - E[a, n] + E[a, p])``, and
    each image's likewise over the captions that describe it; the identity gives the loss above.

    >>> import torch
    >>> s, im = torch.rand(4, 3), torch.rand(4, 3)
    >>> bool(torch.isclose(contrastive_loss(s, im), contrastive_loss(s, im, matches=torch.eye(4, dtype=torch.bool))))
    True
    """
    if s.shape != im.shape:
        raise ValueError(f"caption and image batches differ in shape: {tuple(s.shape)} vs {tuple(im.shape)}")
    errors = measures.measure(method).errors(s, im)
    if matches is not None:
        return _multi_positive(errors, matches, margin, max_violation) + _multi_positive(
            errors.t(), matches.t(), margin, max_violation)
    diagonal = errors.diagonal()
    off = ~torch.eye(errors.shape[0], dtype=torch.bool, device=errors.device)
    cost_im = (margin - errors + diagonal.view(-1, 1)).clamp(min=0) * off
    cost_s = (margin - errors + diagonal.view(1, -1)).clamp(min=0) * off
    if max_violation:
        return cost_im.max(dim=1).values.sum() + cost_s.max(dim=0).values.sum()
    return cost_im.sum() + cost_s.sum()


def _multi_positive(errors: torch.Tensor, matches: torch.Tensor, margin: float, max_violation: bool) -> torch.Tensor:
    """One side of the loss with known matches: row ``a``'s terms over its positives ``p`` and negatives ``n``."""
    if matches.shape != errors.shape or matches.dtype != torch.bool or not bool(matches.diagonal().all()):
        raise ValueError(f"matches must be a {tuple(errors.shape)} boolean matrix with a true diagonal")
    negative = (~matches).to(errors.dtype)
    # terms[a, p, n] = max(0, m - E[a, n] + E[a, p]) where n is a negative of a
    terms = (margin - errors[:, None, :] + errors[:, :, None]).clamp(min=0) * negative[:, None, :]
    per_positive = terms.max(dim=2).values if max_violation else terms.sum(dim=2)
    positive = matches.to(errors.dtype)
    return ((per_positive * positive).sum(dim=1) / positive.sum(dim=1)).sum()


def pair_hinge_loss(errors: torch.Tensor, positive: torch.Tensor, margin: float, reduction: str = "mean") -> torch.Tensor:
    """Hinge loss of labelled pairs: ``E`` for a positive pair, ``max(0, margin - E)`` for a negative one,
    summed or averaged over the batch (``reduction`` ``"sum"`` or ``"mean"``)."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    losses = torch.where(positive.to(torch.bool), errors, (margin - errors).clamp(min=0))
    return losses.sum() if reduction == "sum" else losses.mean()
