"""The reconstruction protocol of Nickel and Kiela, "Poincaré Embeddings" (NIPS 2017), on order-embeddings.

The models train on the whole transitive closure (as in :mod:`.experiment`: the same loss, optimiser,
negatives and options). Then, for each synset ``u`` and each of its hypernyms ``v`` (closure edges), ``v`` is
ranked by error among ``v`` and every synset ``v'`` that is not a hypernym of ``u`` (``u`` itself left out);
the mean rank is over all closure edges, and MAP is the mean over synsets of the average precision of the
ranking of all synsets with the hypernyms as positives (the rule of their ``eval_reconstruction``). Equal
errors: a negative tied with a hypernym counts half towards its rank (the expected rank when ties are
broken at random) and fully in its precision (scikit-learn's average precision, which they use).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange

from .experiment import HypernymConfig, HypernymTrainee, finish_run, hypernym_run, train_trainee
from .protocol import method_of, save_tables
from .wordnet import HypernymDataset, NounGraph, transitive_closure

#: Synsets sampled for the reconstruction measured at each validation (all of them at the end).
VALID_NODES = 256


@njit(parallel=True, cache=True)
def _rank_kernel(emb: np.ndarray, cosine: bool, nodes: np.ndarray, starts: np.ndarray, hypernyms: np.ndarray,
                 rank_sums: np.ndarray, precisions: np.ndarray) -> None:
    """For each synset ``u = nodes[t]``: the sum of its hypernyms' ranks and its average precision.

    The errors of ``u``'s hypernyms (``hypernyms[starts[u]:starts[u + 1]]``, ascending) are sorted; every
    other synset's error is then placed among them by binary search into two histograms (hypernyms with
    error <= x, and < x), whose running sums count the negatives below and tied with each hypernym.
    """
    n, d = emb.shape
    for t in prange(len(nodes)):
        u = nodes[t]
        ups = hypernyms[starts[u]:starts[u + 1]]
        k = len(ups)
        pos = np.empty(k)
        for j in range(k):
            pos[j] = _error(emb, u, ups[j], d, cosine, np.inf)
        pos.sort()
        before = np.zeros(k + 1, dtype=np.int64)  # by the count of hypernyms with error <= x
        upto = np.zeros(k + 1, dtype=np.int64)  # by the count of hypernyms with error < x
        top = pos[k - 1]
        p = 0
        for v in range(n):
            if p < k and ups[p] == v:
                p += 1
                continue
            if v == u:
                continue
            x = _error(emb, u, v, d, cosine, top)
            if x > top:  # above every hypernym: the common case, no search
                before[k] += 1
                upto[k] += 1
                continue
            r = np.searchsorted(pos, x, side="right")
            before[r] += 1
            while r > 0 and pos[r - 1] == x:
                r -= 1
            upto[r] += 1
        lt = 0
        le = 0
        ranks = 0.0
        ap = 0.0
        for j in range(k):
            lt += before[j]  # negatives strictly below the j-th smallest hypernym error
            le += upto[j]  # negatives at or below it
            ranks += 1 + lt + 0.5 * (le - lt)
            hits = np.searchsorted(pos, pos[j], side="right")  # hypernyms at or below it
            ap += hits / (hits + le)
        rank_sums[t] = ranks
        precisions[t] = ap / k


@njit(inline="always", cache=True)
def _error(emb: np.ndarray, u: int, v: int, d: int, cosine: bool, cap: float) -> float:
    """The error of (hyponym ``u``, hypernym ``v``): order violation, or 1 - dot of unit rows; an order
    violation is left partly summed once it passes ``cap`` (a sum of squares only grows)."""
    e = 0.0
    if cosine:
        for i in range(d):
            e += emb[u, i] * emb[v, i]
        return 1.0 - e
    for i in range(d):
        z = emb[v, i] - emb[u, i]
        if z > 0:
            e += z * z
            if e > cap:
                return e
    return e


def reconstruction_metrics(embeddings: np.ndarray, closure: np.ndarray, method: str,
                           nodes: np.ndarray | None = None) -> dict[str, float]:
    """Mean rank and MAP (fractions) of the closure's edges (rows ``(hyponym, hypernym)``) under fixed embeddings.

    ``nodes``: the hyponyms whose edges are ranked (default: every synset with a hypernym). Each hyponym's
    errors to all synsets are computed once; its few hypernyms' errors are sorted and every other synset is
    placed among them by binary search, never sorting all synsets.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if method == "cosine":
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
    emb = np.ascontiguousarray(emb)
    n = len(emb)
    closure = np.unique(np.asarray(closure, dtype=np.int64).reshape(-1, 2), axis=0)
    starts = np.searchsorted(closure[:, 0], np.arange(n + 1))
    counts = np.diff(starts)
    nodes = np.flatnonzero(counts) if nodes is None else np.asarray(nodes, dtype=np.int64)
    if not len(nodes) or (counts[nodes] == 0).any():
        raise ValueError("every ranked synset needs at least one hypernym")
    rank_sums, precisions = np.zeros(len(nodes)), np.zeros(len(nodes))
    _rank_kernel(emb, method == "cosine", nodes, starts, np.ascontiguousarray(closure[:, 1]), rank_sums, precisions)
    return {"mean_rank": float(rank_sums.sum() / counts[nodes].sum()), "map": float(precisions.mean())}


def reconstruction_data(graph: NounGraph, seed: int) -> HypernymDataset:
    """The whole closure as training edges, no held-out edges."""
    closure = transitive_closure(graph.edges, graph.n_nodes)
    none = np.zeros((0, 2), dtype=np.int64)
    return HypernymDataset(graph=graph, closure=closure, train=closure, dev=none, test=none, dev_negatives=none,
                           test_negatives=none, seed=seed)


class ReconstructionTrainee(HypernymTrainee):
    """A hypernym model validated by the reconstruction (MAP) of a fixed sample of synsets' hypernyms."""

    def __init__(self, data: HypernymDataset, config: HypernymConfig) -> None:
        super().__init__(data, config)
        ranked = np.unique(data.closure[:, 0])
        sample = np.random.default_rng(config.seed).permutation(ranked)[:VALID_NODES]
        self.valid_nodes = np.sort(sample)

    def validate(self) -> dict[str, Any]:
        """Mean rank and MAP (percent) of the sampled synsets' hypernyms; the score is the MAP as a fraction."""
        m = reconstruction_metrics(self.current().numpy(), self.data.closure, method_of(self.cfg), self.valid_nodes)
        return {"mean_rank": m["mean_rank"], "map": 100 * m["map"], "threshold": 0.0, "score": m["map"]}


def run_reconstruction(
    data: HypernymDataset,
    configs: list[HypernymConfig],
    run_dir: str | Path | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    started: float | None = None,
    resume: bool = False,
    tensorboard: str | Path | None = None,
) -> dict[str, Any]:
    """Train each configured model on the whole closure and measure its reconstruction; the results object.

    The parameters kept are those of the best MAP on a fixed sample of synsets (the training data:
    reconstruction measures fit, not generalisation); mean rank and MAP are then measured on every synset.
    ``run_dir``, ``resume`` and ``tensorboard`` as in :func:`.experiment.run_experiment`.
    """
    start = time.time() if started is None else started
    record = {"name": "reconstruction", "root": (source or {}).get("root"), "valid_nodes": VALID_NODES}
    with hypernym_run(run_dir, data, configs, source, resume, tensorboard, record) as (folder, writer):
        models: dict[str, dict[str, Any]] = {}
        tables: dict[str, np.ndarray] = {}
        for cfg in configs:
            trainee = ReconstructionTrainee(data, cfg)
            state = train_trainee(trainee, folder, progress, writer)
            m = reconstruction_metrics(trainee.best.numpy(), data.closure, method_of(cfg))
            models[cfg.model] = {"mean_rank": m["mean_rank"], "map": 100 * m["map"], "valid_map": 100 * trainee.dev_accuracy,
                                 "best_epoch": trainee.best_epoch, "best_uidx": state.best_uidx * trainee.updates_per_step,
                                 "updates": state.uidx * trainee.updates_per_step,
                                 "seconds": state.seconds}
            tables[cfg.model] = trainee.best.numpy()
            if folder is not None:
                save_tables(folder, tables, {k: 0.0 for k in tables}, {k: v["map"] for k, v in models.items()})
        results = {"protocol": "reconstruction", "root": (source or {}).get("root"),
                   "dim": {c.model: c.dim for c in configs}, "nodes": data.graph.n_nodes, "edges": len(data.closure),
                   "seed": data.seed, "seconds": time.time() - start, "models": models}
        finish_run(folder, results, {k: v["updates"] for k, v in models.items()})
        return results


def format_reconstruction(results: dict[str, Any]) -> str:
    """The results as Nickel and Kiela's table: mean rank and MAP (percent) of each model."""
    lines = [f"Reconstruction: {results['nodes']} synsets, {results['edges']} closure edges; seed {results['seed']}, "
             f"{results['seconds']:.0f} s", f"{'method':<40} {'mean rank':>10} {'MAP %':>7}"]
    for key, label in (("symmetric", "order-embeddings, symmetric (cosine)"), ("order", "order-embeddings")):
        if key in results["models"]:
            m = results["models"][key]
            lines.append(f"{label:<40} {m['mean_rank']:>10.2f} {m['map']:>7.2f}")
    return "\n".join(lines)
