"""Per-update time of the caption-image trainer after many updates, with and without flushing subnormals.

With a word table the size of COCO's and Zipf-distributed word use, most rows get no gradient
in a given update, so their Adam moments decay geometrically and, after several hundred
updates, sit in the subnormal range, where x86 arithmetic is slow. This benchmark trains
twice from the same start with ``train.trainer`` on real caption text (25,000 MS-COCO captions
read from ``--captions``, five per image, all used for training) paired with generated image
features: once as shipped (subnormals flushed to zero), once with the trainer's undecorated
function (``trainer.__wrapped__``, no flushing). The model is smaller than the paper's so that
it runs in minutes on two cores: a GRU of ``--dim`` units (default 64, the paper's is 1024)
and ``--dim-image``-dimensional features (default 256, the paper's 4096); the word table is
300-dimensional, one row per distinct word of the captions.

From the ``train`` records of the run's ``metrics.jsonl`` (one every 10 updates) it prints
the median milliseconds per update over updates ``--after`` to ``--after + --window``, the
fraction of the word table's first moments that are subnormal at the end, the ratio, and
the CPU model.

Usage: python benchmarks/bench_train_denormals.py [--captions FILE] [--after 1000] [--window 200] [--threads 1]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model

from order_embedding import runs, train

CAPTIONS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco_karpathy_test5k_captions.txt"


def write_data(folder: Path, captions: list[str], dim_image: int) -> None:
    """A data folder in the original layout: train (all captions) and a 100-image dev split, generated features."""
    rng = np.random.default_rng(0)
    n_images = len(captions) // 5
    features = rng.standard_normal((n_images, dim_image), dtype=np.float32)
    (folder / "images" / "10crop").mkdir(parents=True)
    (folder / "train.txt").write_text("\n".join(captions[: 5 * n_images]) + "\n")
    np.save(folder / "images" / "10crop" / "train.npy", features)
    (folder / "dev.txt").write_text("\n".join(captions[:500]) + "\n")
    np.save(folder / "images" / "10crop" / "dev.npy", features[:100])


def per_update_ms(run_dir: Path, after: int, window: int) -> tuple[float, float]:
    """Median and mean milliseconds per update between the train records in (after, after + window]."""
    records = [r for r in runs.read_metrics(run_dir) if r.get("event") == "train"]
    steps = [(b["time"] - a["time"]) / (b["uidx"] - a["uidx"]) for a, b in itertools.pairwise(records)
             if after < b["uidx"] <= after + window]
    return 1000 * float(np.median(steps)), 1000 * float(np.mean(steps))


def subnormal_fraction(run_dir: Path) -> float:
    """Fraction of the word table's Adam first moments that are subnormal in the run's last checkpoint."""
    tensors, _ = runs.load_tensors(run_dir / runs.LAST)
    m = next(v for k, v in tensors.items() if k.startswith("optim.") and "embedding" in k and k.endswith(".exp_avg"))
    return float(((m != 0) & (m.abs() < torch.finfo(m.dtype).tiny)).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--captions", type=Path, default=CAPTIONS, help="caption text, one per line, five per image")
    parser.add_argument("--after", type=int, default=1000, help="updates before the timed window (default 1000)")
    parser.add_argument("--window", type=int, default=200, help="updates timed (default 200)")
    parser.add_argument("--dim", type=int, default=64, help="GRU units and joint-space dimension (default 64)")
    parser.add_argument("--dim-image", type=int, default=256, help="generated image feature dimension (default 256)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: flushing covers the calling thread only)")
    args = parser.parse_args()
    if not args.captions.is_file():
        parser.error(f"--captions: {args.captions} is not a file")
    captions = [line.strip() for line in args.captions.read_text().splitlines() if line.strip()]
    if len(captions) < 1000:
        parser.error(f"--captions: {args.captions} has {len(captions)} captions; at least 1000 are needed")
    torch.set_num_threads(args.threads)
    batch_size = 128
    updates = args.after + args.window
    per_epoch = math.ceil(len(captions) // 5 / batch_size)  # an epoch visits every image once
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs, torch threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_data(tmp / "data", captions, args.dim_image)
        results = {}
        for name, fn in (("flushing (as shipped)", train.trainer), ("no flushing", train.trainer.__wrapped__)):
            run_dir = fn(name=name.split()[0], save_dir=str(tmp / "runs"), data=str(tmp / "data"), dim=args.dim,
                         dim_image=args.dim_image, dim_word=300, batch_size=batch_size,
                         max_epochs=math.ceil((updates + 10) / per_epoch), validFreq=10**9, dispFreq=10,
                         device="cpu", verbose=False)
            words = json.loads((run_dir / runs.CONFIG).read_text())["model"]["n_words"]
            median, mean = per_update_ms(run_dir, args.after, args.window)
            results[name] = median
            print(f"{name:<22}: {median:6.1f} ms/update (median; mean {mean:.1f}) over updates {args.after}-{updates}; "
                  f"word table {words} x 300, {100 * subnormal_fraction(run_dir):.1f} % of its first moments "
                  f"subnormal at the end (load average now {os.getloadavg()[0]:.1f})")
    print(f"flushing: {results['no flushing'] / results['flushing (as shipped)']:.2f}x fewer ms per update")


if __name__ == "__main__":
    main()
