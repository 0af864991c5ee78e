"""Speed of ``hypernym --training ganea`` (Ganea et al.'s SGD training of order-embeddings) on WordNet 3.0 nouns.

For two sets of training edges, Ganea et al.'s split at ``--percent`` (basic edges plus that share of the others,
root removed) and the whole closure (the reconstruction protocol's training edges), times one epoch's parts:
drawing 10 filtered negatives per edge as shipped (rank selection among the synsets not known below the
hypernym), drawing them by rejection (draw any synset, draw again while it is known below the hypernym: the
baseline), and the SGD pass itself (batches of 10 edges, d = ``--dim``). Each figure is the median of
``--repeats`` runs after one compiling run, on one core. Prints seconds, the rejection/rank ratio, edges
per second of a whole epoch, the CPU model and the load average (figures are comparable only on idle cores).

Usage: python benchmarks/bench_hypernym_sgd.py [--wordnet DIR] [--percent 50] [--dim 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import numpy as np
from machine import cpu_model

from order_embedding.hypernym import sgd
from order_embedding.hypernym.wordnet import (
    DEFAULT_WORDNET_DIR,
    ganea_split,
    read_wordnet,
    transitive_closure,
    without_root,
)


@numba.njit(cache=True)
def draw_by_rejection(edges: np.ndarray, start: np.ndarray, index: np.ndarray, n_nodes: int, k: int,
                      seed: int) -> np.ndarray:
    """The baseline: uniform draws repeated while the synset is excluded for the hypernym (binary search)."""
    np.random.seed(seed)
    out = np.empty((len(edges), k), np.int64)
    for j in range(len(edges)):
        y = edges[j, 1]
        lo0, hi0 = start[y], start[y + 1]
        if hi0 - lo0 == n_nodes:  # every synset excluded: draw from all, as the shipped sampler does
            for s in range(k):
                out[j, s] = np.random.randint(n_nodes)
            continue
        for s in range(k):
            while True:
                x = np.random.randint(n_nodes)
                lo, hi = lo0, hi0
                while lo < hi:
                    mid = (lo + hi) // 2
                    if index[mid] < x:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo == hi0 or index[lo] != x:
                    break
            out[j, s] = x
    return out


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one run that compiles."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(name: str, edges: np.ndarray, n_nodes: int, dim: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    order = edges[rng.permutation(len(edges))]
    start, index = sgd.excluded_index(edges, n_nodes)
    drawn = sgd.draw_hyponym_negatives(order, start, index, n_nodes, 10, 1)
    table = sgd.initial_table(n_nodes, dim, 0).numpy()
    rank = timed(lambda: sgd.draw_hyponym_negatives(order, start, index, n_nodes, 10, 1), repeats)
    reject = timed(lambda: draw_by_rejection(order, start, index, n_nodes, 10, 1), repeats)
    step = timed(lambda: sgd.sgd_epoch(table, order, drawn, 0.1, 1.0, 10), repeats)
    print(f"{name}: {len(edges):,} edges x 11 pairs, d = {dim}")
    print(f"  negatives, rank selection (shipped) {rank:7.3f} s")
    print(f"  negatives, rejection (baseline)     {reject:7.3f} s   {reject / rank:5.1f}x the shipped time")
    print(f"  SGD pass                            {step:7.3f} s")
    print(f"  epoch (shipped negatives + SGD)     {rank + step:7.3f} s   {len(edges) / (rank + step):,.0f} edges/s; "
          f"500 epochs {500 * (rank + step) / 60:.1f} min")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wordnet", default=DEFAULT_WORDNET_DIR)
    p.add_argument("--percent", type=int, default=50)
    p.add_argument("--dim", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    numba.set_num_threads(1)
    print(f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.2f}")
    graph = read_wordnet(a.wordnet)
    split = ganea_split(without_root(graph), a.percent, seed=0)
    bench(f"Ganea et al.'s split at {a.percent} %", split.data.train, split.data.graph.n_nodes, a.dim, a.repeats)
    bench("the whole closure (reconstruction)", transitive_closure(graph.edges, graph.n_nodes), graph.n_nodes,
          a.dim, a.repeats)


if __name__ == "__main__":
    main()
