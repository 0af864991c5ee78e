"""The table of Ganea et al.'s protocol: order-embeddings trained their way, every percentage, d = 5 and 10.

Runs ``order-embedding hypernym --protocol ganea --training ganea`` with the settings of their
``params.py`` for order-embeddings (learning rate 0.1, batches of 10 edges, 10 negatives per edge that are
not known below its hypernym, margin 1, 500 epochs) once per (dimension, percentage, seed) whose ``--json``
is not yet in ``OUT`` (with ``--resume``, so an interrupted run continues from its checkpoint), ``--jobs``
at a time with one thread each, and prints test F1 as mean ± sd over the seeds, with each run's seconds.

Usage: python experiments/ganea_table.py OUT [--seeds 0 1 2] [--dims 5 10] [--percents 0 10 25 50 90]
       [--root mammal.n.01] [--jobs 2] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Their ``params.py`` settings for order-embeddings (the dimension and percentage vary).
SETTINGS = ["--training", "ganea", "--no-symmetric", "--lrate", "0.1", "--batch_size", "10", "--negatives", "10",
            "--filter-negatives", "--margin", "1", "--max_epochs", "500"]


def run(out: Path, dim: int, percent: int, seed: int, root: str | None, dry_run: bool) -> Path:
    """The ``--json`` of one run, made if missing."""
    name = f"d{dim}.p{percent}.s{seed}"
    path = out / f"{name}.json"
    if not path.exists():
        cmd = [sys.executable, "-m", "order_embedding", "hypernym", "--protocol", "ganea", "--percent", str(percent),
               "--dim", str(dim), "--seed", str(seed), "--threads", "1", "--quiet", "--save_dir", str(out / "runs"),
               "--name", name, "--json", str(path), "--resume", *SETTINGS, *(["--root", root] if root else [])]
        print(" ".join(cmd[1:]), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def cell(values: list[float]) -> str:
    """Mean ± sd (the sd only with more than one value)."""
    if len(values) > 1:
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    return f"{values[0]:.1f}" if values else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dims", type=int, nargs="+", default=[5, 10])
    p.add_argument("--percents", type=int, nargs="+", default=[0, 10, 25, 50, 90])
    p.add_argument("--root", help="a subtree, e.g. mammal.n.01 (default: every noun)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    jobs = [(d, pc, s) for s in a.seeds for d in a.dims for pc in a.percents]
    with ThreadPoolExecutor(a.jobs) as pool:
        paths = dict(zip(jobs, pool.map(lambda j: run(a.out, *j, a.root, a.dry_run), jobs)))
    if a.dry_run:
        return
    results = {j: json.loads(path.read_text()) for j, path in paths.items()}
    print(f"test F1 %, mean ± sd over seeds {' '.join(map(str, a.seeds))}")
    print("| d | " + " | ".join(f"{pc} %" for pc in a.percents) + " |")
    print("|---|" + "---|" * len(a.percents))
    for d in a.dims:
        f1 = [cell([results[d, pc, s]["models"]["order"]["test_f1"] for s in a.seeds]) for pc in a.percents]
        print(f"| {d} | " + " | ".join(f1) + " |")
    print("\n| d | % | seed | dev F1 | test P | test R | test F1 | best epoch | training s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (d, pc, s), r in sorted(results.items()):
        m = r["models"]["order"]
        print(f"| {d} | {pc} | {s} | {m['dev_f1']:.2f} | {m['test_precision']:.2f} | {m['test_recall']:.2f} | "
              f"{m['test_f1']:.2f} | {m['best_epoch']} | {m['seconds']:.0f} |")


if __name__ == "__main__":
    main()
