"""Speed of hypernym-completion training on WordNet 3.0 nouns, by CPU thread count.

Prints the time to read WordNet and build the closure and split, the time of the
transitive-closure baseline, and for each thread count the wall and CPU milliseconds
per update of the order model (dim 50, batch 1000, Adam), with the projected time of
one epoch (about 1,470 updates) and of the default 10-epoch run. The load average is
printed too: on shared cores OpenMP threads wait for each other, which is why the
``hypernym`` command defaults to one thread.

Usage: python benchmarks/bench_hypernym.py [--wordnet DIR] [--updates 200] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from order_embedding.hypernym.experiment import (
    HypernymConfig,
    adam_optimizer,
    closure_baseline,
    labelled,
    train_step,
)
from order_embedding.hypernym.wordnet import (
    DEFAULT_WORDNET_DIR,
    build_dataset,
    corrupt_edges,
    read_wordnet,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", default=DEFAULT_WORDNET_DIR)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    t = time.perf_counter()
    data = build_dataset(read_wordnet(args.wordnet), seed=0)
    print(f"read WordNet, closure and split: {time.perf_counter() - t:.1f} s "
          f"({data.graph.n_nodes} synsets, {len(data.closure)} closure edges)")
    t = time.perf_counter()
    closure_baseline(data)
    print(f"transitive-closure baseline: {time.perf_counter() - t:.1f} s")

    cfg = HypernymConfig()
    rng = np.random.default_rng(0)
    pairs, labels = labelled(data.train, corrupt_edges(data.train, data.graph.n_nodes, rng))
    order = rng.permutation(len(pairs))
    pairs_t, labels_t = torch.from_numpy(pairs[order]), torch.from_numpy(labels[order])
    per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    for threads in args.threads:
        torch.set_num_threads(threads)
        weight = torch.nn.Parameter(torch.randn(data.graph.n_nodes, cfg.dim, generator=torch.Generator().manual_seed(0)))
        grad = torch.zeros_like(weight)
        optimizer = adam_optimizer(weight, cfg.lr)
        batches = [slice(b * cfg.batch_size, (b + 1) * cfg.batch_size) for b in range(args.updates + 10)]
        for rows in batches[:10]:  # warm-up
            train_step(weight, grad, optimizer, pairs_t[rows], labels_t[rows], "order", cfg.margin)
        wall, cpu = time.perf_counter(), time.process_time()
        for rows in batches[10:]:
            train_step(weight, grad, optimizer, pairs_t[rows], labels_t[rows], "order", cfg.margin)
        wall = (time.perf_counter() - wall) / args.updates
        cpu = (time.process_time() - cpu) / args.updates
        print(f"threads {threads}: {1000 * wall:.2f} ms/update wall, {1000 * cpu:.2f} ms CPU; "
              f"epoch ({per_epoch} updates) {per_epoch * wall:.0f} s, {cfg.epochs} epochs {cfg.epochs * per_epoch * wall / 60:.1f} min "
              f"(load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
