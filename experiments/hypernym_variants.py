"""Variants of the hypernym experiment's order model on the paper's split, chosen on dev.

Runs ``order-embedding hypernym --no-symmetric --threads 1 --quiet`` once per (variant, seed) whose
``--json`` is not yet in ``OUT`` (so an interrupted sweep continues where it stopped), one at a time,
and prints one row per variant: its options and the order model's dev accuracy per seed. Test
accuracy is printed only with ``--test``, once a variant has been chosen on dev, as mean ± sd over the
seeds, beside the transitive-closure baseline of the same splits.

Usage: python experiments/hypernym_variants.py OUT [--seeds 0] [--variants paper,negatives-2 ...] [--test]
       [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

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
}


def run(out: Path, variant: str, seed: int, dry_run: bool) -> Path:
    """The ``--json`` of one run, made if missing."""
    path = out / f"{variant}.s{seed}.json"
    if not path.exists():
        cmd = [sys.executable, "-m", "order_embedding", "hypernym", "--no-symmetric", "--threads", "1", "--quiet",
               "--seed", str(seed), "--save_dir", str(out / "runs"), "--name", f"{variant}.s{seed}",
               "--json", str(path), *VARIANTS[variant]]
        print(" ".join(cmd[1:]), flush=True)
        if not dry_run:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--test", action="store_true", help="also print test accuracy (after choosing on dev)")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
