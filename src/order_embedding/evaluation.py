"""Retrieval metrics of the paper: ranks, R@K, median and mean rank, COCO 1K folds and 5K.

Ranks are 0-based positions in the ascending order of errors; ties are broken by
index (the order of a stable sort). A NaN error is never a hit: a NaN among the others
sorts after every number (as NumPy's sort puts it), and a query whose own error is NaN
gets rank ``n`` (the number of items ranked), past every position, so it counts in no R@K. For caption -> image (``t2i``) each caption's
rank is that of its own image; for image -> caption (``i2t``) an image's rank is
the best rank among its own captions.

With a CUDA device (``device=``, or the model's device in :func:`evaluate_split`) the
error matrices and ranks are computed on it, block by block; the results are NumPy.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .data import FOLD_SIZE
from .inference import encode_split, model_split
from .measures import measure

Metrics = dict[str, float]

#: Error-matrix elements computed at once when evaluating large splits blockwise.
BLOCK_ELEMENTS = 1 << 24


def default_cap2img(n_captions: int, n_images: int) -> np.ndarray:
    """The original's layout: five captions per image, in image order."""
    if n_captions != 5 * n_images:
        raise ValueError(
            f"{n_captions} captions for {n_images} images is not 5 per image; pass cap2img explicitly"
        )
    return np.arange(n_captions) // 5


def _check(errors: np.ndarray, cap2img: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    errors = np.asarray(errors)
    if errors.ndim != 2:
        raise ValueError(f"errors must be a captions x images matrix, got shape {errors.shape}")
    if cap2img is None:
        cap2img = default_cap2img(*errors.shape)
    cap2img = np.asarray(cap2img, dtype=np.int64)
    if cap2img.shape != (errors.shape[0],):
        raise ValueError(f"cap2img has {cap2img.shape[0]} entries for {errors.shape[0]} captions")
    if cap2img.size and (cap2img.min() < 0 or cap2img.max() >= errors.shape[1]):
        raise ValueError("cap2img points outside the images")
    return errors, cap2img


def _like(values, x: np.ndarray):
    """``x`` on the side of ``values``: a tensor on its device when ``values`` is a tensor (errors scored on a GPU)."""
    return torch.as_tensor(x, device=values.device) if isinstance(values, torch.Tensor) else x


def _numpy(x) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _stable_rank(values, target, position, axis: int) -> np.ndarray:
    """Rank of ``target`` (at index ``position``) among ``values`` along ``axis`` in a stable ascending sort.

    ``values`` is a NumPy array or a tensor (then computed on its device); the ranks come back as NumPy.
    """
    index = _like(values, np.arange(values.shape[axis]))
    position = _like(values, np.asarray(position))
    if axis == 1:
        smaller = (values < target[:, None]).sum(1)
        tied_before = ((values == target[:, None]) & (index[None, :] < position[:, None])).sum(1)
    else:
        smaller = (values < target[None, :]).sum(0)
        tied_before = ((values == target[None, :]) & (index[:, None] < position[None, :])).sum(0)
    ranks = _numpy(smaller + tied_before)
    ranks[_numpy(target != target)] = values.shape[axis]  # a NaN own error ranks past everything
    return ranks


def ranks_t2i(errors: np.ndarray, cap2img: np.ndarray | None = None) -> np.ndarray:
    """For each caption, the 0-based rank of its own image among all images."""
    errors, cap2img = _check(errors, cap2img)
    return _ranks_t2i(errors, cap2img)


def ranks_i2t(errors: np.ndarray, cap2img: np.ndarray | None = None) -> np.ndarray:
    """For each image with captions, in image order, the best 0-based rank among its own captions."""
    errors, cap2img = _check(errors, cap2img)
    return _ranks_i2t(errors, cap2img, 0)


def _ranks_t2i(errors, cap2img: np.ndarray) -> np.ndarray:
    """Text-to-image ranks of every caption row of ``errors`` (a NumPy array or a tensor on any device)."""
    rows = np.arange(errors.shape[0])
    return _stable_rank(errors, errors[_like(errors, rows), _like(errors, cap2img)], cap2img, axis=1)


def _ranks_i2t(errors, cap2img: np.ndarray, first_image: int) -> np.ndarray:
    """Image-to-text ranks of the image columns ``first_image ..`` of ``errors`` (all captions as rows)."""
    local = cap2img - first_image
    caps = np.flatnonzero((local >= 0) & (local < errors.shape[1]))
    own = _numpy(errors[_like(errors, caps), _like(errors, local[caps])])
    # Each image's first own caption in stable order: smallest error, then smallest index.
    order = np.lexsort((caps, own, local[caps]))
    first = np.ones(len(order), dtype=bool)
    first[1:] = local[caps[order[1:]]] != local[caps[order[:-1]]]
    best = caps[order[first]]
    columns = errors[:, _like(errors, local[best])]
    return _stable_rank(columns, errors[_like(errors, best), _like(errors, local[best])], best, axis=0)


def recall_metrics(ranks: np.ndarray, n_ranked: int | None = None) -> Metrics:
    """R@1, R@5, R@10 (percent), median rank and mean rank (1-based) of 0-based ranks.

    ``n_ranked`` is the number of items each query ranked; given, a rank of ``n_ranked`` or
    more (a NaN own error) is a miss even for a K beyond the number of items.
    """
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate")
    limit = np.inf if n_ranked is None else n_ranked
    return {
        "R@1": 100.0 * float(np.mean(ranks < min(1, limit))),
        "R@5": 100.0 * float(np.mean(ranks < min(5, limit))),
        "R@10": 100.0 * float(np.mean(ranks < min(10, limit))),
        "medr": float(np.floor(np.median(ranks)) + 1),
        "meanr": float(np.mean(ranks) + 1),
    }


def _as_tuple(m: Metrics) -> tuple[float, float, float, float, float]:
    return (m["R@1"], m["R@5"], m["R@10"], m["medr"], m["meanr"])


def t2i(errors: np.ndarray, cap2img: np.ndarray | None = None) -> tuple[float, float, float, float, float]:
    """Text-to-image ``(R@1, R@5, R@10, median rank, mean rank)`` of a captions x images error matrix."""
    return _as_tuple(recall_metrics(ranks_t2i(errors, cap2img), np.shape(errors)[1]))


def i2t(errors: np.ndarray, cap2img: np.ndarray | None = None) -> tuple[float, float, float, float, float]:
    """Image-to-text ``(R@1, R@5, R@10, median rank, mean rank)`` of a captions x images error matrix."""
    return _as_tuple(recall_metrics(ranks_i2t(errors, cap2img), np.shape(errors)[0]))


def embedding_ranks(
    s: np.ndarray | torch.Tensor,
    im: np.ndarray | torch.Tensor,
    cap2img: np.ndarray,
    errors: Callable,
    block_elements: int = BLOCK_ELEMENTS,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(t2i ranks, i2t ranks)`` from embeddings, in blocks so the error matrix is never whole in memory.

    With a CUDA ``device`` the embeddings are copied there once and the errors and
    ranks computed there (``errors`` then takes tensors); only the ranks come back.
    """
    if device is not None and torch.device(device).type == "cuda":
        s = torch.as_tensor(np.asarray(s), device=device)
        im = torch.as_tensor(np.asarray(im), device=device)
    n_cap, n_img = len(s), len(im)
    cap2img = np.asarray(cap2img, dtype=np.int64)
    if n_cap * n_img <= block_elements:
        e = errors(s, im)
        return ranks_t2i(e, cap2img), ranks_i2t(e, cap2img)
    rows = max(1, block_elements // n_img)
    r_t2i = [_ranks_t2i(errors(s[i : i + rows], im), cap2img[i : i + rows]) for i in range(0, n_cap, rows)]
    cols = max(1, block_elements // n_cap)
    r_i2t = [_ranks_i2t(errors(s, im[j : j + cols]), cap2img, j) for j in range(0, n_img, cols)]
    return np.concatenate(r_t2i), np.concatenate(r_i2t)


def evaluate_embeddings(s: np.ndarray, im: np.ndarray, cap2img: np.ndarray, method: str,
                        device: str | torch.device | None = None) -> dict[str, Metrics]:
    """Both directions' metrics from caption and image embeddings under a measure name (scored on ``device`` when CUDA)."""
    r_t2i, r_i2t = embedding_ranks(s, im, cap2img, measure(method).errors, device=device)
    return {"t2i": recall_metrics(r_t2i, len(im)), "i2t": recall_metrics(r_i2t, len(s))}


def evaluate_split(model, split, verbose: bool = False) -> dict[str, Metrics]:
    """Both directions' metrics of a loaded model on a whole :class:`~order_embedding.data.Split`, scored on the model's device."""
    s, im = encode_split(model, split, verbose)
    return evaluate_embeddings(s, im, split.cap2img, model.config.method, device=model.device)


def average_metrics(results: list[dict[str, Metrics]]) -> dict[str, Metrics]:
    """Per-figure means of several evaluations with the same keys (COCO 1K: five folds)."""
    return {d: {k: float(np.mean([r[d][k] for r in results])) for k in results[0][d]} for d in results[0]}


def ranking_eval_5fold(
    model,
    split: str = "test",
    data: str | None = None,
    cnn: str | None = None,
    fold5: bool = True,
    fold_size: int = FOLD_SIZE,
    image_root: str | None = None,
    verbose: bool = False,
) -> dict:
    """COCO-style evaluation of a loaded model: the mean over 1,000-image folds, or the whole split.

    ``data`` and ``cnn`` default to the ones the model was trained with. Returns
    ``{"t2i": metrics, "i2t": metrics, "folds": [per-fold results]}``.
    """
    full = model_split(model, split, data, cnn, image_root)
    if not fold5 or full.n_images <= fold_size:
        result = evaluate_split(model, full, verbose)
        return {**result, "folds": [result]}
    folds = [evaluate_split(model, full.fold(k, fold_size), verbose) for k in range(full.n_images // fold_size)]
    return {**average_metrics(folds), "folds": folds}


def _topk_rows(errors, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and errors of the ``k`` smallest entries per row, in stable ascending order (NaN last), as NumPy."""
    k = min(k, errors.shape[1])
    if isinstance(errors, torch.Tensor):
        order = torch.sort(torch.nan_to_num(errors, nan=float("inf")), dim=1, stable=True).indices[:, :k]
        return _numpy(order), _numpy(torch.gather(errors, 1, order))
    idx = np.argsort(errors, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(errors, idx, axis=1)


def retrieval_lists(
    s: np.ndarray | torch.Tensor, im: np.ndarray | torch.Tensor, cap2img: np.ndarray, method: str, k: int = 10,
    block_elements: int = BLOCK_ELEMENTS, device: str | torch.device | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-query ranks and top-``k`` lists (indices and errors) in both directions, computed in blocks.

    With a CUDA ``device`` the errors, ranks and lists are computed there; the results are NumPy arrays.
    """
    errors: Callable = measure(method).errors
    cap2img = np.asarray(cap2img, dtype=np.int64)
    if device is not None and torch.device(device).type == "cuda":
        s = torch.as_tensor(np.asarray(s), device=device)
        im = torch.as_tensor(np.asarray(im), device=device)
    rows = max(1, block_elements // max(1, len(im)))
    t_ranks, t_idx, t_err = [], [], []
    for i in range(0, len(s), rows):
        e = errors(s[i : i + rows], im)
        t_ranks.append(_ranks_t2i(e, cap2img[i : i + rows]))
        idx, err = _topk_rows(e, k)
        t_idx.append(idx)
        t_err.append(err)
    cols = max(1, block_elements // max(1, len(s)))
    i_ranks, i_idx, i_err = [], [], []
    for j in range(0, len(im), cols):
        e = errors(s, im[j : j + cols])
        i_ranks.append(_ranks_i2t(e, cap2img, j))
        idx, err = _topk_rows(e.T, k)
        i_idx.append(idx)
        i_err.append(err)
    return {
        "t2i": {"ranks": np.concatenate(t_ranks), "top": np.concatenate(t_idx), "errors": np.concatenate(t_err)},
        "i2t": {"ranks": np.concatenate(i_ranks), "top": np.concatenate(i_idx), "errors": np.concatenate(i_err)},
    }


def _labelled_errors(errors: np.ndarray, labels: np.ndarray, finite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Errors as float64 and labels as bool, flat, as many of each and at least one (with ``finite``, no NaN or
    infinity among the errors); ``ValueError`` otherwise."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if len(e) == 0 or len(e) != len(y):
        raise ValueError(f"need as many labels as errors, at least one (got {len(e)} errors, {len(y)} labels)")
    if finite and not np.isfinite(e).all():
        raise ValueError("errors contain NaN or infinity")
    return e, y


def best_threshold(errors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold (predict a positive pair, an edge or an entailment, iff error <= threshold) of highest accuracy, and that accuracy.

    Cuts fall between distinct error values, at the midpoint; equal errors always get the
    same prediction. Among equally accurate cuts the lowest threshold wins.
    """
    e, y = _labelled_errors(errors, labels, finite=True)
    order = np.argsort(e, kind="stable")
    e, y = e[order], y[order]
    n_neg = int((~y).sum())
    correct = np.cumsum(y) + n_neg - np.cumsum(~y)  # cut after index i: first i+1 predicted edges
    correct = np.where(np.r_[e[1:] != e[:-1], True], correct, -1)
    i = int(np.argmax(correct))
    if n_neg >= correct[i]:  # predicting no edge at all is at least as good
        return float(np.nextafter(e[0], -np.inf)), n_neg / len(e)
    threshold = e[-1] if i == len(e) - 1 else (e[i] + e[np.searchsorted(e, e[i], side="right")]) / 2
    return float(threshold), int(correct[i]) / len(e)


def accuracy_at(errors: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs classified right when a positive is predicted iff error <= threshold."""
    e, y = _labelled_errors(errors, labels)
    return float(np.mean((e <= threshold) == y))


def precision_recall_f1(errors: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and F1 (fractions) of predicting a positive iff error <= threshold (0 where undefined)."""
    e, y = _labelled_errors(errors, labels)
    predicted = e <= threshold
    tp = int((predicted & y).sum())
    fp, fn = int((predicted & ~y).sum()), int((~predicted & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return precision, recall, (2 * tp / (2 * tp + fp + fn) if tp else 0.0)


def best_f1_threshold(errors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold (a positive iff error <= threshold) of highest F1, and that F1 (a fraction).

    The threshold is one of the errors, so equal errors always get the same prediction; among
    equally good thresholds the lowest wins (the rule of Ganea et al.'s ``eval.py``).
    """
    e, y = _labelled_errors(errors, labels, finite=True)
    if not y.any():
        raise ValueError("F1 needs at least one positive")
    order = np.argsort(e, kind="stable")
    e, y = e[order], y[order]
    tp, predicted = np.cumsum(y), np.arange(1, len(e) + 1)
    f1 = 2 * tp / (predicted + y.sum())  # 2 tp / (2 tp + fp + fn), fp + tp = predicted, tp + fn = positives
    f1 = np.where(np.r_[e[1:] != e[:-1], True], f1, -1.0)  # cut only after the last of equal errors
    i = int(np.argmax(f1))
    return float(e[i]), float(f1[i])
