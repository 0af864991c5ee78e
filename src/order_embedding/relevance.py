"""Retrieval over every true match: average precision per query and the ROC curve of thresholding a score.

Both take an error matrix (queries x items, lower = a better match, as the measures give) and a boolean
matrix of which items truly match each query. Tied errors are ranked by item index in average precision and
count half in the ROC's area, as in the Mann-Whitney statistic.
"""
from __future__ import annotations

import numpy as np


def average_precision(errors: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Each query's average precision: the mean, over the items it truly matches, of the precision of the
    ranking (by increasing error) cut at that item. A query that matches no item raises ``ValueError``."""
    errors, relevant = np.asarray(errors), np.asarray(relevant, dtype=bool)
    if errors.shape != relevant.shape or errors.ndim != 2:
        raise ValueError(f"errors {errors.shape} and relevant {relevant.shape} must be matrices of one shape")
    n_relevant = relevant.sum(axis=1)
    if np.any(n_relevant == 0):
        raise ValueError(f"query {int(np.argmin(n_relevant))} matches no item: its average precision is undefined")
    order = np.argsort(errors, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    precision = np.cumsum(hits, axis=1) / np.arange(1, errors.shape[1] + 1)
    return (precision * hits).sum(axis=1) / n_relevant


def roc_auc(errors: np.ndarray, relevant: np.ndarray) -> float:
    """Area under the ROC curve of "error below a threshold" as the test for a true match: the probability
    that a true pair has a lower error than a false one (ties half), over all pairs of the matrices."""
    scores, labels = _flat(errors, relevant)
    ranks = _midranks(scores)  # 1 = the highest error
    n_true = int(labels.sum())
    n_false = labels.size - n_true
    # Mann-Whitney: the true pairs' rank sum, less the least it could be, counts the (true, false) pairs
    # ordered correctly.
    return float((ranks[labels].sum() - n_true * (n_true + 1) / 2) / (n_true * n_false))


def roc_curve(errors: np.ndarray, relevant: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve sampled at ``points`` evenly spaced false-positive rates from 0 to 1: (fpr, tpr), the
    true-positive rate being the highest any threshold reaches without exceeding that false-positive rate."""
    scores, labels = _flat(errors, relevant)
    order = np.argsort(-scores, kind="stable")  # increasing error
    ranked_scores, ranked = scores[order], labels[order]
    last = np.r_[ranked_scores[1:] != ranked_scores[:-1], True]  # a threshold takes all tied pairs at once
    tpr = np.r_[0.0, np.cumsum(ranked)[last] / ranked.sum()]
    fpr = np.r_[0.0, np.cumsum(~ranked)[last] / (~ranked).sum()]
    grid = np.linspace(0.0, 1.0, points)
    reached = np.searchsorted(fpr, grid, side="right") - 1  # the last threshold whose fpr <= grid
    return grid, tpr[reached]


def _flat(errors: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores (higher = more likely a match) and labels of every (query, item) pair; both classes present."""
    errors, relevant = np.asarray(errors), np.asarray(relevant, dtype=bool)
    if errors.shape != relevant.shape:
        raise ValueError(f"errors {errors.shape} and relevant {relevant.shape} differ in shape")
    labels = relevant.ravel()
    if labels.all() or not labels.any():
        raise ValueError("the ROC needs both true and false matches")
    return -errors.ravel().astype(np.float64), labels


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1 (the smallest value), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranked = values[order]
    starts = np.r_[True, ranked[1:] != ranked[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, values.size])
    ranks = np.empty(values.size)
    ranks[order] = first[group] + (sizes[group] + 1) / 2
    return ranks
