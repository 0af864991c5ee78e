"""Speed of hypernym-completion training on WordNet 3.0 nouns at steady state.

Trains the order model (dim 50, batch 1000, Adam over the 82,115 x 50 table) for one full
epoch first (about 1,470 updates), so that the Adam moments of rows left untouched have had
time to decay into the subnormal range, then times ``--updates`` more updates. Four runs:
the training step as shipped (``train_step``: only the batch's rows gathered, clamped and
zeroed; dense Adam over the whole table) and the whole-table step it replaces (clamp the full
table, zero and fill a dense gradient, dense Adam), each with and without subnormals flushed
to zero. Prints wall and CPU milliseconds per update, the ratios, the projected time of the
default 15-epoch run, the CPU model and the load average (the timings are only comparable on
otherwise idle cores).

Usage: python benchmarks/bench_hypernym.py [--wordnet DIR] [--updates 300] [--threads 1]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import time

import numpy as np
import torch
from machine import cpu_model

from order_embedding.hypernym.experiment import (
    HypernymConfig,
    adam_optimizer,
    closure_baseline,
    hinge_loss,
    labelled,
    pair_errors,
    train_step,
)
from order_embedding.hypernym.wordnet import (
    DEFAULT_WORDNET_DIR,
    build_dataset,
    corrupt_edges,
    read_wordnet,
)
from order_embedding.optim import flush_denormals


def whole_table_step(weight: torch.nn.Parameter, grad: torch.Tensor, optimizer: torch.optim.Optimizer,
                     pairs: torch.Tensor, labels: torch.Tensor, margin: float) -> float:
    """The baseline: the order model's update done over the whole table (clamp all, zero all, scatter)."""
    with torch.no_grad():
        weight.clamp_(min=0)
    x = weight.detach()[pairs[:, 0]].requires_grad_()
    z = weight.detach()[pairs[:, 1]].requires_grad_()
    loss = hinge_loss(pair_errors(x, z, "order"), labels, margin)
    loss.backward()
    grad.zero_()
    grad.index_add_(0, pairs[:, 0], x.grad)
    grad.index_add_(0, pairs[:, 1], z.grad)
    weight.grad = grad
    optimizer.step()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet", default=DEFAULT_WORDNET_DIR, help="folder with WordNet 3.0's data.noun and index.noun")
    parser.add_argument("--updates", type=int, default=300, help="updates timed after the warm-up epoch (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as the hypernym command)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs, torch threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    data = build_dataset(read_wordnet(args.wordnet), seed=0)
    print(f"read WordNet, closure and split: {time.perf_counter() - t:.1f} s "
          f"({data.graph.n_nodes} synsets, {len(data.closure)} closure edges)")
    t = time.perf_counter()
    closure_baseline(data)
    print(f"transitive-closure baseline: {time.perf_counter() - t:.1f} s")

    cfg = HypernymConfig()
    n = data.graph.n_nodes
    rng = np.random.default_rng(0)
    epochs = []
    for _ in range(2):  # the warm-up epoch, then the timed updates, each with its own negatives
        pairs, labels = labelled(data.train, corrupt_edges(data.train, n, rng))
        order = rng.permutation(len(pairs))
        epochs.append((torch.from_numpy(pairs[order]), torch.from_numpy(labels[order])))
    per_epoch = math.ceil(len(epochs[0][0]) / cfg.batch_size)
    if args.updates > per_epoch:
        parser.error(f"--updates must be at most {per_epoch} (one epoch)")

    def batches(epoch: int, count: int):
        pairs_t, labels_t = epochs[epoch]
        for b in range(count):
            rows = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            yield pairs_t[rows], labels_t[rows]

    results = {}
    for step_name in ("whole-table step", "train_step"):
        for flush in (False, True):
            weight = torch.nn.Parameter(torch.randn(n, cfg.dim, generator=torch.Generator().manual_seed(0)))
            grad = torch.zeros_like(weight)
            optimizer = adam_optimizer(weight, cfg.lr)
            if step_name == "train_step":
                step = functools.partial(train_step, weight, grad, optimizer, method="order", margin=cfg.margin)
            else:
                step = functools.partial(whole_table_step, weight, grad, optimizer, margin=cfg.margin)
            with flush_denormals() if flush else contextlib.nullcontext():
                for p, y in batches(0, per_epoch):
                    step(p, y)
                wall, cpu = time.perf_counter(), time.process_time()
                for p, y in batches(1, args.updates):
                    step(p, y)
                wall = (time.perf_counter() - wall) / args.updates
                cpu = (time.process_time() - cpu) / args.updates
            m = optimizer.state[weight]["exp_avg"]
            subnormal = float(((m != 0) & (m.abs() < torch.finfo(m.dtype).tiny)).float().mean())
            results[step_name, flush] = wall
            print(f"{step_name:<17} {'flushing' if flush else 'no flushing':<12}: {1000 * wall:6.2f} ms/update wall, "
                  f"{1000 * cpu:6.2f} ms CPU; {100 * subnormal:4.1f} % of first moments subnormal; "
                  f"{cfg.epochs} epochs {cfg.epochs * per_epoch * wall / 60:4.1f} min "
                  f"(load average now {os.getloadavg()[0]:.1f})")
    base = results["whole-table step", False]
    print(f"flushing alone: {base / results['whole-table step', True]:.2f}x fewer ms per update; "
          f"train_step with flushing: {base / results['train_step', True]:.2f}x fewer than the whole-table step "
          f"without, {results['whole-table step', True] / results['train_step', True]:.2f}x fewer than with flushing")


if __name__ == "__main__":
    main()
