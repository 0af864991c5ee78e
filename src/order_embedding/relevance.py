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
    fpr, tpr = _roc_steps(errors, relevant)
    return _area(fpr, tpr)


def roc_curve(errors: np.ndarray, relevant: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve sampled at ``points`` evenly spaced false-positive rates from 0 to 1: (fpr, tpr), the
    true-positive rate being the highest any threshold reaches without exceeding that false-positive rate."""
    return _sampled(*_roc_steps(errors, relevant), points)


def roc(errors: np.ndarray, relevant: np.ndarray, points: int = 101) -> tuple[float, np.ndarray, np.ndarray]:
    """:func:`roc_auc` and :func:`roc_curve` together, from one sort of the pairs: (auc, fpr, tpr)."""
    fpr, tpr = _roc_steps(errors, relevant)
    return (_area(fpr, tpr), *_sampled(fpr, tpr, points))


def _roc_steps(errors: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1); tied errors are passed all at once."""
    errors, relevant = np.asarray(errors), np.asarray(relevant, dtype=bool)
    if errors.shape != relevant.shape:
        raise ValueError(f"errors {errors.shape} and relevant {relevant.shape} differ in shape")
    labels = relevant.ravel()
    if labels.all() or not labels.any():
        raise ValueError("the ROC needs both true and false matches")
    flat = errors.ravel()
    order = np.argsort(flat)  # ties form one step below, so their order does not matter
    ranked_errors, ranked = flat[order], labels[order]
    last = np.r_[ranked_errors[1:] != ranked_errors[:-1], True]
    true_so_far = np.cumsum(ranked)[last]
    false_so_far = np.flatnonzero(last) + 1 - true_so_far
    return np.r_[0.0, false_so_far / false_so_far[-1]], np.r_[0.0, true_so_far / true_so_far[-1]]


def _area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoid area under the ROC steps: a step over tied errors counts its (true, false) pairs half, as
    the Mann-Whitney statistic does."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _sampled(fpr: np.ndarray, tpr: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """The steps' highest true-positive rate at ``points`` evenly spaced false-positive rates."""
    grid = np.linspace(0.0, 1.0, points)
    reached = np.searchsorted(fpr, grid, side="right") - 1  # the last threshold whose fpr <= grid
    return grid, tpr[reached]
