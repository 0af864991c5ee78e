"""Variants of the hypernym experiment's order model on the paper's split, chosen on dev.

Runs ``order-embedding hypernym --no-symmetric --threads 1 --quiet`` once per (variant, seed) whose
``--json`` is not yet in ``OUT`` (with ``--resume``, so an interrupted run continues from its checkpoint),
one at a time, and prints one row per variant: its options and the order model's dev accuracy per seed. Test
accuracy is printed only with ``--test``, once a variant has been chosen on dev, as mean ± sd over the
seeds, beside the transitive-closure baseline of the same splits.

``--ceiling`` adds, for each seed, the accuracy of a model that knows all of WordNet: every positive
accepted and every negative rejected except those that are closure pairs (true, labelled negative), and
for each variant the kinds of dev errors of its first seed's run: held-out pairs the training closure
does not imply (mostly direct edges) rejected, and negatives that are not closure pairs accepted.

Usage: python experiments/hypernym_variants.py OUT [--seeds 0] [--variants paper,negatives-2 ...] [--test]
       [--ceiling] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from order_embedding.hypernym import load_embeddings
from order_embedding.hypernym.wordnet import (
    HypernymDataset,
    build_dataset,
    contains_edges,
    read_wordnet,
    transitive_closure,
)

#: Each variant's options beyond the paper's settings (the command's defaults).
VARIANTS: dict[str, list[str]] = {
    "paper": [],
    "negatives-2-filtered": ["--negatives", "2", "--filter-negatives"],
    "lr-decay": ["--lr-decay"],
    "negatives-5-filtered": ["--negatives", "5", "--filter-negatives"],
    "dim-100": ["--dim", "100"],
    "lrate-0.03": ["--lrate", "0.03"],
    "reversed-negatives": ["--reversed-negatives"],
    "negatives-2-filtered-30-epochs-lr-decay": ["--negatives", "2", "--filter-negatives", "--max_epochs", "30",
                                                "--lr-decay"],
    "ganea-training-100-epochs": ["--training", "ganea", "--lrate", "0.1", "--batch_size", "10", "--negatives", "10",
                                  "--filter-negatives", "--max_epochs", "100"],
}


def run(out: Path, variant: str, seed: int, dry_run: bool) -> Path:
    """The ``--json`` of one run, made if missing."""
    path = out / f"{variant}.s{seed}.json"
    if not path.exists():
        cmd = [sys.executable, "-m", "order_embedding", "hypernym", "--no-symmetric", "--threads", "1", "--quiet",
               "--seed", str(seed), "--save_dir", str(out / "runs"), "--name", f"{variant}.s{seed}",
               "--json", str(path), "--resume", *VARIANTS[variant]]
        print(" ".join(cmd[1:]), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def ceiling(data: HypernymDataset, split: str) -> tuple[int, float]:
    """The split's negatives that are closure pairs, and the accuracy (%) of a model that knows the closure."""
    negatives = getattr(data, f"{split}_negatives")
    true = int(contains_edges(data.closure, negatives, data.graph.n_nodes).sum())
    return true, 100 * (1 - true / (2 * len(negatives)))


def dev_errors(data: HypernymDataset, run_dir: Path) -> str:
    """A run's dev errors by kind: implied or not by the training closure, true or false negatives."""
    emb = load_embeddings(run_dir)
    n = data.graph.n_nodes
    implied = contains_edges(transitive_closure(data.train, n), data.dev, n)
    true = contains_edges(data.closure, data.dev_negatives, n)
    accepted_pos = emb.errors([(emb.names[a], emb.names[b]) for a, b in data.dev]) <= emb.thresholds["order"]
    accepted_neg = emb.errors([(emb.names[a], emb.names[b]) for a, b in data.dev_negatives]) <= emb.thresholds["order"]
    return (f"implied rejected {int((implied & ~accepted_pos).sum())}/{int(implied.sum())}, "
            f"not implied rejected {int((~implied & ~accepted_pos).sum())}/{int((~implied).sum())}, "
            f"false accepted {int((~true & accepted_neg).sum())}/{int((~true).sum())}, "
            f"true accepted {int((true & accepted_neg).sum())}/{int(true.sum())}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--test", action="store_true", help="also print test accuracy (after choosing on dev)")
    p.add_argument("--ceiling", action="store_true", help="also the closure ceiling and the dev errors by kind")
    p.add_argument("--dry-run", action="store_true", help="print the commands of missing runs, run nothing")
    args = p.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = {(n, s): run(args.out, n, s, args.dry_run) for n in names for s in args.seeds}
    header = f"{'variant':<28} {'options':<40} " + " ".join(f"{f'dev s{s}':>7}" for s in args.seeds)
    print(header + (f" {'test mean ± sd':>15} {'closure test':>12}" if args.test else ""))
    for n in names:
        results = [json.loads(paths[n, s].read_text()) for s in args.seeds if paths[n, s].exists()]
        if len(results) < len(args.seeds):
            continue
        row = f"{n:<28} {' '.join(VARIANTS[n]) or '(defaults)':<40} " + " ".join(
            f"{r['models']['order']['dev_accuracy']:>7.2f}" for r in results)
        if args.test:
            test = [r["models"]["order"]["test_accuracy"] for r in results]
            closure = [r["models"]["transitive_closure"]["test_accuracy"] for r in results]
            sd = statistics.stdev(test) if len(test) > 1 else 0.0
            row += f" {statistics.mean(test):>7.2f} ± {sd:.2f} {statistics.mean(closure):>12.2f}"
        print(row)
    if args.ceiling:
        graph = read_wordnet()
        data = {s: build_dataset(graph, s) for s in args.seeds}
        for s in args.seeds:
            (dev_true, dev_top), (test_true, test_top) = ceiling(data[s], "dev"), ceiling(data[s], "test")
            print(f"seed {s}: true pairs among the negatives: dev {dev_true} (ceiling {dev_top:.2f} %), "
                  f"test {test_true} (ceiling {test_top:.2f} %)")
        for n in names:
            if (args.out / "runs" / f"{n}.s{args.seeds[0]}" / "model.safetensors").exists():
                print(f"{n}, seed {args.seeds[0]}, dev: {dev_errors(data[args.seeds[0]], args.out / 'runs' / f'{n}.s{args.seeds[0]}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
