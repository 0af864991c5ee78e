"""The full demo over several seeds: each seed's table, the spread of every figure, and how much the dev
score moves between consecutive validations (before and after the learning-rate drop).

Each seed generates its own shapes world and trains both models from scratch in
``OUT/seed{k}`` (a seed whose runs are already there is only evaluated again). Prints,
per seed, the demo's table and its wall time; then, per model, the minimum, maximum and
spread (max - min) over the seeds of each R@K, median and mean rank, the hierarchy check
precision@10, average precision and ROC AUC (each the mean over the test folds); then, per seed, the order
model's figures less the symmetric model's; then, per model and seed, the spread
of each R@K over the test folds (the test sampling noise within one seed); then, per model
and seed, the largest change of the dev selection score
(text-to-image R@1 + R@5 + R@10) between consecutive validations in the epochs before
``lr_update`` and in those after it; and the CPU model.

Usage: python experiments/demo_seeds.py [--out /tmp/demo-seeds] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # machine.py
from machine import cpu_model  # noqa: E402

from order_embedding import runs
from order_embedding.demo import FULL, format_demo, run_demo


def figures(result: dict) -> dict[str, float]:
    """The demo's figures of one model (or one test fold) as flat ``name: value`` pairs."""
    out = {f"{d} {k}": v for d in ("i2t", "t2i") for k, v in result[d].items()}
    for group, label in (("hierarchy", "hierarchy"), ("precision_at_10", "P@10"), ("average_precision", "AP")):
        for k, v in result.get(group, {}).items():
            out[f"{label} {k}"] = v
    if "roc" in result:
        out["ROC AUC"] = result["roc"]["auc"]
    return out


def dev_swings(run_dir: Path, lr_update: int | None) -> tuple[float, float]:
    """Largest |change| of the dev score between consecutive validations, before and after the drop
    (NaN where there are fewer than two validations)."""
    valid = [r for r in runs.read_metrics(run_dir) if r["event"] == "valid"]
    before, after = [], []
    for a, b in zip(valid, valid[1:]):
        late = lr_update is not None and a["epoch"] >= lr_update
        (after if late else before).append(abs(b["score"] - a["score"]))
    return max(before, default=float("nan")), max(after, default=float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/demo-seeds"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    results = {}
    for seed in args.seeds:
        start = time.time()
        results[seed] = run_demo(args.out / f"seed{seed}", seed=seed, verbose=False)
        (args.out / f"seed{seed}.json").write_text(json.dumps(results[seed], indent=2))
        print(f"== seed {seed} ({time.time() - start:.0f} s)\n{format_demo(results[seed])}\n", flush=True)

    print(f"spread over seeds {args.seeds} (min .. max, spread = max - min)")
    for model in ("order", "symmetric"):
        table = [figures(results[s][model]) for s in args.seeds]
        print(f"  {model}")
        for name in table[0]:
            values = np.array([t[name] for t in table])
            d = 3 if name == "ROC AUC" else 1
            print(f"    {name:<16} {values.min():7.{d}f} .. {values.max():7.{d}f}   spread {np.ptp(values):5.{d}f}")
    print("order model minus symmetric model, per seed (seeds " + " | ".join(map(str, args.seeds)) + ")")
    for name in ("i2t R@1", "i2t R@10", "t2i R@1", "t2i R@10", "P@10 general", "AP all", "AP general", "AP specific",
                 "ROC AUC"):
        diffs = [figures(results[s]["order"])[name] - figures(results[s]["symmetric"])[name] for s in args.seeds]
        digits = 3 if name == "ROC AUC" else 1
        print(f"    {name:<16} " + " | ".join(f"{d:+.{digits}f}" for d in diffs))
    print("spread of each R@K over the test folds within each seed (seeds " + " | ".join(map(str, args.seeds)) + ")")
    for model in ("order", "symmetric"):
        print(f"  {model}")
        per_seed = [[figures(f) for f in results[s][model]["folds"]] for s in args.seeds]
        for name in (n for n in per_seed[0][0] if "R@" in n):
            cells = " | ".join(f"{np.ptp([f[name] for f in folds]):5.1f}" for folds in per_seed)
            print(f"    {name:<16} {cells}")
    print(f"largest change of the dev score between consecutive validations (epochs < {FULL.lr_update} | after;"
          " - where fewer than two validations fall there)")
    for seed in args.seeds:
        for model in ("order", "symmetric"):
            swings = dev_swings(Path(results[seed][model]["run_dir"]), FULL.lr_update)
            before, after = ("    -" if np.isnan(v) else f"{v:5.1f}" for v in swings)
            print(f"  seed {seed} {model:<10} {before} | {after}")
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
