"""Per-update time of the demo's full-scale order model with 1 and 2 CPU threads (torch's and numba's), alone and beside one
other CPU-bound process: whether training collapses when the cores are shared, and which thread count
``demo --threads auto`` should choose.

A shapes world of ``--images`` training images is generated in a temporary folder; for each thread count
and condition a fresh process trains the order model with the full demo's settings (``demo.FULL``) for
``--updates`` updates and the median seconds per update after the first ``--skip`` is read from the run's
``metrics.jsonl``. The competing process is a Python busy loop. Prints each figure, its ratio to the
2-thread time alone, and the CPU model.

Usage: python benchmarks/bench_demo_threads.py [--images 1280] [--updates 60] [--skip 10]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import cpu_model

TRAIN = """
import sys
from order_embedding import demo, train
from order_embedding.cli.threads import cpu_threads
opts = demo.train_options(demo.FULL)
opts.update(max_epochs=int(sys.argv[4]), dispFreq=1, validFreq=10**6)
with cpu_threads(int(sys.argv[3])):
    train.trainer("order", name="t", save_dir=sys.argv[2], data=sys.argv[1], seed=0, verbose=False, **opts)
"""


def seconds_per_update(run_dir: Path, skip: int) -> float:
    """Median seconds between consecutive train records (one per update) after the first ``skip``."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [(r["uidx"], r["time"]) for r in records if r.get("event") == "train"]
    steps = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(times) if a[0] >= skip]
    return float(np.median(steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1280, help="training images of the generated world")
    ap.add_argument("--updates", type=int, default=60, help="updates timed per condition (rounded up to epochs)")
    ap.add_argument("--skip", type=int, default=10, help="first updates left out (warm-up)")
    args = ap.parse_args()
    from order_embedding import demo
    from order_embedding.data.shapes import generate_shapes

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs")
    per_epoch = -(-args.images // demo.FULL.batch_size)
    epochs = -(-args.updates // per_epoch)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_shapes(data, n_train=args.images, n_dev=100, n_test=0, image_size=demo.FULL.image_size, verbose=False)
        for (threads, busy) in [(2, False), (1, False), (2, True), (1, True)]:
            other = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                runs_dir = Path(tmp) / f"runs-{threads}-{busy}"
                subprocess.run([sys.executable, "-c", TRAIN, str(data), str(runs_dir), str(threads), str(epochs)],
                               check=True)
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            results[(threads, busy)] = seconds_per_update(runs_dir / "t", args.skip)
    base = results[(2, False)]
    print(f"{'CPU threads':<14} {'other process':<14} {'s per update':>12} {'vs 2 threads alone':>19}")
    for (threads, busy), sec in results.items():
        print(f"{threads:<14} {'busy loop' if busy else 'none':<14} {sec:12.3f} {sec / base:19.2f}")


if __name__ == "__main__":
    main()
