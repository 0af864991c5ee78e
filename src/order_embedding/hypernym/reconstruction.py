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
import torch

from .. import loop, runs
from ..measures import order_errors
from .experiment import RESULTS, HypernymConfig, HypernymTrainee
from .protocol import method_of, prepare_protocol_run, save_tables, train_trainee
from .wordnet import HypernymDataset, NounGraph, transitive_closure

#: Synsets whose errors to every synset are computed at once (a block of errors is ``block x synsets``).
BLOCK = 128
#: Synsets sampled for the reconstruction measured at each validation (all of them at the end).
VALID_NODES = 1000


def all_errors(embeddings: np.ndarray, hyponyms: np.ndarray, method: str) -> torch.Tensor:
    """``E[b, v]``: error of the pair (hyponym ``hyponyms[b]``, hypernym ``v``) for every synset ``v`` (float32)."""
    if method == "order":
        # sum_i max(0, y_i - x_i)^2 is the caption-image error of (-x, -y)
        return torch.from_numpy(order_errors(-embeddings[hyponyms], -embeddings))
    unit = torch.nn.functional.normalize(torch.from_numpy(embeddings), dim=1, eps=1e-8)
    return 1.0 - unit[torch.from_numpy(hyponyms)] @ unit.T


def reconstruction_metrics(embeddings: np.ndarray, closure: np.ndarray, method: str,
                           nodes: np.ndarray | None = None, block: int = BLOCK) -> dict[str, float]:
    """Mean rank and MAP of the closure's edges (rows ``(hyponym, hypernym)``) under fixed embeddings.

    ``nodes``: the hyponyms whose edges are ranked (default: every synset with a hypernym). Each hyponym's
    errors to all synsets are computed in blocks; its few hypernyms' errors are sorted and the other
    synsets are counted below each of them by binary search, never sorting all synsets.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(emb)
    closure = np.unique(np.asarray(closure, dtype=np.int64).reshape(-1, 2), axis=0)
    starts = np.searchsorted(closure[:, 0], np.arange(n + 1))
    counts = np.diff(starts)
    if nodes is None:
        nodes = np.flatnonzero(counts)
    nodes = np.asarray(nodes, dtype=np.int64)
    if not len(nodes) or (counts[nodes] == 0).any():
        raise ValueError("every ranked synset needs at least one hypernym")
    rank_sum = ap_sum = 0.0
    for b0 in range(0, len(nodes), block):
        us = nodes[b0:b0 + block]
        k = int(counts[us].max())
        errors = all_errors(emb, us, method)  # B x n
        rows = torch.arange(len(us))
        # each row's hypernyms (padded with the row's own synset) and their errors, sorted; padding at +inf
        hyper = torch.from_numpy(np.stack([np.r_[closure[starts[u]:starts[u + 1], 1], np.full(k - counts[u], u)]
                                           for u in us]))
        real = torch.arange(k)[None, :] < torch.from_numpy(counts[us])[:, None]
        pos = torch.where(real, errors.gather(1, hyper), torch.tensor(float("inf")))
        pos, _ = pos.sort(dim=1)
        # a synset of error x lies below the j-th hypernym iff before <= j, at or below it iff upto <= j
        before = torch.searchsorted(pos, errors, right=True)  # hypernyms with error <= x
        upto = torch.searchsorted(pos, errors, right=False)  # hypernyms with error < x
        drop = torch.zeros_like(errors, dtype=torch.bool)  # hypernyms and the synset itself are not negatives
        drop[rows[:, None].expand(-1, k)[real], hyper[real]] = True
        drop[rows, torch.from_numpy(us)] = True
        lt, le = _counts_below(before, drop, k).double(), _counts_below(upto, drop, k).double()
        positives_upto = torch.searchsorted(pos, pos, right=True).double()  # hypernyms with error <= each one's
        ranks = 1 + lt + 0.5 * (le - lt)
        precision = positives_upto / (positives_upto + le)
        ones = real.double()
        rank_sum += float((ranks * ones).sum())
        ap_sum += float(((precision * ones).sum(1) / ones.sum(1)).sum())
    return {"mean_rank": rank_sum / float(counts[nodes].sum()), "map": ap_sum / len(nodes)}


def _counts_below(bucket: torch.Tensor, drop: torch.Tensor, k: int) -> torch.Tensor:
    """``out[b, j]``: entries of row ``b`` not dropped whose bucket is at most ``j``, for ``j < k``."""
    rows, width = bucket.shape[0], k + 2
    bucket = torch.where(drop, k + 1, bucket) + torch.arange(rows)[:, None] * width
    hist = torch.bincount(bucket.ravel(), minlength=rows * width).view(rows, width)
    return hist[:, :k].cumsum(1)


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
    writer = loop.tensorboard_writer(tensorboard)
    folder = None
    lock = None
    if run_dir is not None:
        record = {"name": "reconstruction", "root": (source or {}).get("root"), "valid_nodes": VALID_NODES}
        folder = prepare_protocol_run(Path(run_dir), data, configs, source or {}, record, resume)
        lock = runs.lock_run(folder)
    try:
        models: dict[str, dict[str, Any]] = {}
        tables: dict[str, np.ndarray] = {}
        for cfg in configs:
            trainee = ReconstructionTrainee(data, cfg)
            state = train_trainee(trainee, cfg, folder, progress, writer)
            m = reconstruction_metrics(trainee.best.numpy(), data.closure, method_of(cfg))
            models[cfg.model] = {"mean_rank": m["mean_rank"], "map": 100 * m["map"], "valid_map": 100 * trainee.dev_accuracy,
                                 "best_epoch": trainee.best_epoch, "best_uidx": state.best_uidx, "updates": state.uidx,
                                 "seconds": state.seconds}
            tables[cfg.model] = trainee.best.numpy()
            if folder is not None:
                save_tables(folder, tables, {k: 0.0 for k in tables}, {k: v["map"] for k, v in models.items()})
        results = {"protocol": "reconstruction", "root": (source or {}).get("root"),
                   "dim": {c.model: c.dim for c in configs}, "nodes": data.graph.n_nodes, "edges": len(data.closure),
                   "seed": data.seed, "seconds": time.time() - start, "models": models}
        if folder is not None:
            runs.save_json(folder / RESULTS, results)
            loop.finish(folder, {"updates": {k: v["updates"] for k, v in models.items()}, "seconds": results["seconds"]})
        return results
    finally:
        if lock is not None:
            lock.close()
        if writer is not None:
            writer.close()


def format_reconstruction(results: dict[str, Any]) -> str:
    """The results as Nickel and Kiela's table: mean rank and MAP (percent) of each model."""
    lines = [f"Reconstruction: {results['nodes']} synsets, {results['edges']} closure edges; seed {results['seed']}, "
             f"{results['seconds']:.0f} s", f"{'method':<40} {'mean rank':>10} {'MAP %':>7}"]
    for key, label in (("symmetric", "order-embeddings, symmetric (cosine)"), ("order", "order-embeddings")):
        if key in results["models"]:
            m = results["models"][key]
            lines.append(f"{label:<40} {m['mean_rank']:>10.2f} {m['map']:>7.2f}")
    return "\n".join(lines)
