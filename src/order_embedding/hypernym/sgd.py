"""Ganea et al.'s training of order-embeddings (``--training ganea``), compiled: plain SGD on the summed loss.

Ganea, Bécigneul and Hofmann, "Hyperbolic Entailment Cones" (ICML 2018), compare against order-embeddings
trained by their ``order_emb_model.py``: each batch holds ``batch_size`` training edges (hyponym x, hypernym
y), each with ``negatives`` pairs (x', y) whose hyponym is replaced by a random synset; the batch's loss is
the sum over its edges of ``E(x, y) + sum max(0, margin - E(x', y))`` with the order violation
``E(x, y) = sum_i max(0, y_i - x_i)^2``; every gradient of the batch is taken at the table as it was before
the batch, and the table then moves by ``-lr`` times their sum. Vectors start uniform in
:data:`INIT_RANGE` and are not clamped: the errors depend only on differences, so a table shifted into the
non-negative orthant (:func:`shifted`) has the same errors. An epoch is two compiled calls: the negatives'
draw and the SGD pass.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

#: Vectors start uniform in (-INIT_RANGE, INIT_RANGE) (their ``init_range``).
INIT_RANGE = 0.1


def excluded_index(edges: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The synsets a replacement hyponym of each synset ``y`` avoids, sorted: ``y`` itself and its known
    hyponyms in ``edges`` (hyponym, hypernym rows), as ``index[start[y]:start[y + 1]]``.

    >>> start, index = excluded_index(np.array([[2, 0], [1, 0], [2, 1]]), 3)
    >>> [index[start[y]:start[y + 1]].tolist() for y in range(3)]
    [[0, 1, 2], [1, 2], [2]]
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    own = np.arange(n_nodes, dtype=np.int64)
    keys = np.unique(np.concatenate([edges[:, 1] * n_nodes + edges[:, 0], own * n_nodes + own]))  # by y, then x
    start = np.zeros(n_nodes + 1, np.int64)
    np.add.at(start, keys // n_nodes + 1, 1)
    return np.cumsum(start), keys % n_nodes


@numba.njit(cache=True)
def draw_hyponym_negatives(edges: np.ndarray, start: np.ndarray, index: np.ndarray, n_nodes: int, k: int,
                           seed: int) -> np.ndarray:
    """``k`` replacement hyponyms for each edge row (hyponym, hypernym ``y``): uniform over the synsets that
    :func:`excluded_index` does not list for ``y`` (over every synset when it lists them all, as their code
    does for the root)."""
    np.random.seed(seed)
    out = np.empty((len(edges), k), np.int64)
    for j in range(len(edges)):
        y = edges[j, 1]
        first, m = start[y], start[y + 1] - start[y]
        allowed = n_nodes - m
        for s in range(k):
            if allowed == 0:
                out[j, s] = np.random.randint(n_nodes)
                continue
            # the r-th allowed synset is r plus the number of excluded synsets e_i (sorted) with e_i - i <= r
            r = np.random.randint(allowed)
            lo, hi = 0, m
            while lo < hi:
                mid = (lo + hi) // 2
                if index[first + mid] - mid <= r:
                    lo = mid + 1
                else:
                    hi = mid
            out[j, s] = r + lo
    return out


@numba.njit(cache=True)
def sgd_epoch(table: np.ndarray, edges: np.ndarray, negatives: np.ndarray, lr: float, margin: float,
              batch_size: int) -> float:
    """One pass of SGD over ``edges`` in the given order (row j with the replacement hyponyms
    ``negatives[j]``), ``batch_size`` edges per update, updating ``table`` in place; the summed loss."""
    d = table.shape[1]
    k = negatives.shape[1]
    rows = np.empty(2 * batch_size * (1 + k), np.int64)
    grads = np.empty((2 * batch_size * (1 + k), d), table.dtype)
    diff = np.empty(d, np.float64)
    total = 0.0
    for first in range(0, len(edges), batch_size):
        n = 0
        for j in range(first, min(first + batch_size, len(edges))):
            y = edges[j, 1]
            for s in range(k + 1):
                x = edges[j, 0] if s == 0 else negatives[j, s - 1]
                e = 0.0
                for c in range(d):
                    t = float(table[y, c]) - float(table[x, c])
                    diff[c] = t if t > 0.0 else 0.0
                    e += diff[c] * diff[c]
                if s == 0:  # the edge: E, gradient 2 diff for y and -2 diff for x
                    total += e
                    sign = 1.0
                elif e < margin:  # a negative inside the margin: margin - E
                    total += margin - e
                    sign = -1.0
                else:
                    continue
                rows[n], rows[n + 1] = y, x
                for c in range(d):
                    grads[n, c] = 2.0 * sign * diff[c]
                    grads[n + 1, c] = -2.0 * sign * diff[c]
                n += 2
        for i in range(n):
            for c in range(d):
                table[rows[i], c] -= lr * grads[i, c]
    return total


def initial_table(n_nodes: int, dim: int, seed: int) -> torch.Tensor:
    """A table uniform in (-:data:`INIT_RANGE`, :data:`INIT_RANGE`)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_nodes, dim, generator=g) * 2 - 1) * INIT_RANGE


def shifted(table: torch.Tensor) -> torch.Tensor:
    """The table moved into the non-negative orthant (each column's minimum to 0); every order error is kept."""
    return table - table.min(dim=0).values if len(table) else table.clone()


def train_epoch(table: torch.Tensor, edges: np.ndarray, known: tuple[np.ndarray, np.ndarray], negatives: int,
                lr: float, margin: float, batch_size: int, rng: np.random.Generator) -> float:
    """One shuffled epoch of SGD on ``edges`` (hyponym, hypernym rows) with fresh negatives; the mean loss
    per edge. ``known``: :func:`excluded_index` of the edges whose hyponyms a negative avoids."""
    order = edges[rng.permutation(len(edges))]
    drawn = draw_hyponym_negatives(order, known[0], known[1], len(table), negatives, int(rng.integers(2**31)))
    return sgd_epoch(table.numpy(), order, drawn, lr, margin, batch_size) / max(len(edges), 1)
