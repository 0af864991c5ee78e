"""The protocol of Ganea, Bécigneul and Hofmann, "Hyperbolic Entailment Cones" (ICML 2018), on order-embeddings.

The split is :func:`.wordnet.ganea_split` (basic edges plus a percentage of the others for training, 5 % of
the non-basic edges for validation and 5 % for test, 5 + 5 corrupted negatives per held-out edge). The
models train as in :mod:`.experiment` (the same loss, optimiser, negatives and options); validation picks
the threshold of highest F1 on the validation edges, and the parameters kept are those of the highest
validation F1. Test precision, recall and F1 are measured at that threshold (their ``eval.py``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import best_f1_threshold, precision_recall_f1
from .experiment import (
    HypernymConfig,
    HypernymTrainee,
    embedding_errors,
    finish_run,
    hypernym_run,
    labelled,
    train_trainee,
)
from .protocol import method_of, save_tables
from .wordnet import GANEA_HELD_OUT_PERCENT, GANEA_NEGATIVES_PER_END, GaneaSplit, contains_edges, transitive_closure


class F1Trainee(HypernymTrainee):
    """A hypernym model validated by F1 at its best threshold on the dev (validation) edges."""

    def validate(self) -> dict[str, Any]:
        """Dev F1 (percent) at the threshold of highest F1; the score is that F1 as a fraction."""
        errors = embedding_errors(self.current(), self.dev_pairs, method_of(self.cfg))
        threshold, f1 = best_f1_threshold(errors, self.dev_labels)
        return {"dev_f1": 100 * f1, "threshold": threshold, "score": f1}


def scores(errors: np.ndarray, labels: np.ndarray, threshold: float, split: str) -> dict[str, float]:
    """``{split}_precision``, ``_recall`` and ``_f1`` in percent at ``threshold``."""
    p, r, f = precision_recall_f1(errors, labels, threshold)
    return {f"{split}_precision": 100 * p, f"{split}_recall": 100 * r, f"{split}_f1": 100 * f}


def closure_baseline_f1(split: GaneaSplit) -> dict[str, float]:
    """Scores (percent) of predicting an edge iff it lies in the transitive closure of the training edges.

    The training edges hold every basic edge, whose closure is the whole closure, so this baseline is exact.
    """
    data = split.data
    known = transitive_closure(data.train, data.graph.n_nodes)
    out: dict[str, float] = {}
    for name, pos, neg in (("dev", data.dev, data.dev_negatives), ("test", data.test, data.test_negatives)):
        pairs, labels = labelled(pos, neg)
        predicted = contains_edges(known, pairs, data.graph.n_nodes)
        out.update(scores(np.where(predicted, 0.0, 1.0), labels, 0.5, name))
    return out


def protocol_record(split: GaneaSplit, root: str | None) -> dict[str, Any]:
    """The protocol's settings and sizes, as ``config.json`` records them under ``protocol``."""
    return {"name": "ganea", "percent": split.percent, "root": root, "root_removed": True,
            "held_out_percent": GANEA_HELD_OUT_PERCENT, "negatives_per_end": GANEA_NEGATIVES_PER_END,
            "basic_edges": len(split.basic), "non_basic_edges": len(split.non_basic),
            "train_non_basic_edges": len(split.train_non_basic)}


def run_ganea(
    split: GaneaSplit,
    configs: list[HypernymConfig],
    run_dir: str | Path | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    started: float | None = None,
    resume: bool = False,
    tensorboard: str | Path | None = None,
) -> dict[str, Any]:
    """Train each configured model on the split and run the closure baseline; the results object (percent).

    With ``run_dir``, a run folder gets the config (with the protocol), synset list, metrics, the kept
    embeddings and ``results.json``; ``resume`` and ``tensorboard`` as in :func:`.experiment.run_experiment`.
    """
    start = time.time() if started is None else started
    data = split.data
    root = (source or {}).get("root")
    with hypernym_run(run_dir, data, configs, source, resume, tensorboard, protocol_record(split, root)) as (folder, writer):
        models: dict[str, dict[str, Any]] = {}
        tables: dict[str, np.ndarray] = {}
        thresholds: dict[str, float] = {}
        for cfg in configs:
            trainee = F1Trainee(data, cfg)
            state = train_trainee(trainee, folder, progress, writer)
            test_pairs, test_labels = labelled(data.test, data.test_negatives)
            errors = embedding_errors(trainee.best, test_pairs, method_of(cfg))
            models[cfg.model] = {"dev_f1": 100 * trainee.dev_accuracy, **scores(errors, test_labels, trainee.threshold, "test"),
                                 "threshold": trainee.threshold, "best_epoch": trainee.best_epoch,
                                 "best_uidx": state.best_uidx * trainee.updates_per_step,
                                 "updates": state.uidx * trainee.updates_per_step, "seconds": state.seconds}
            tables[cfg.model], thresholds[cfg.model] = trainee.best.numpy(), trainee.threshold
            if folder is not None:
                save_tables(folder, tables, thresholds, {k: v["dev_f1"] for k, v in models.items()})
        models["transitive_closure"] = closure_baseline_f1(split)
        results = {"protocol": "ganea", "percent": split.percent, "root": root, "dim": {c.model: c.dim for c in configs},
                   "nodes": data.graph.n_nodes, "edges": len(data.closure), "basic_edges": len(split.basic),
                   "non_basic_edges": len(split.non_basic), "train_edges": len(data.train), "dev_edges": len(data.dev),
                   "test_edges": len(data.test), "seed": data.seed, "seconds": time.time() - start, "models": models}
        finish_run(folder, results, {k: v["updates"] for k, v in models.items() if "updates" in v})
        return results


#: Rows of the printed table: key in ``results["models"]`` and its label.
TABLE_ROWS = (("transitive_closure", "transitive closure of the training edges"),
              ("symmetric", "order-embeddings, symmetric (cosine)"), ("order", "order-embeddings"))


def format_ganea(results: dict[str, Any]) -> str:
    """The results as Ganea et al.'s table: dev F1, test precision, recall and F1 in percent."""
    lines = [f"Ganea et al. protocol, {results['percent']} % of the non-basic edges: {results['nodes']} synsets, "
             f"{results['edges']} closure edges ({results['basic_edges']} basic), {results['train_edges']} training, "
             f"{results['dev_edges']} dev, {results['test_edges']} test; seed {results['seed']}, {results['seconds']:.0f} s",
             f"{'method':<42} {'dev F1':>7} {'test P':>7} {'test R':>7} {'test F1':>7}"]
    for key, label in TABLE_ROWS:
        if key in results["models"]:
            m = results["models"][key]
            lines.append(f"{label:<42} {m['dev_f1']:>7.2f} {m['test_precision']:>7.2f} {m['test_recall']:>7.2f} "
                         f"{m['test_f1']:>7.2f}")
    return "\n".join(lines)
