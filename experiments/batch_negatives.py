"""How many of the contrastive loss's negatives are true matches: for each caption level of a demo world's
training split, the share of the other training images the caption truly describes (by the truth checker).

The loss sums a hinge over every other image of a batch as a negative for each caption; a caption true of
a share p of the images has about p x 127 of a 128-image batch's negatives that it truly describes, and the
loss pushes it away from each of them, the opposite of placing a general caption below every image it
describes. Prints, per level, the mean and median share and the expected true matches among a batch's
negatives.

Usage: python experiments/batch_negatives.py DIR [--split train] [--batch-size 128]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from order_embedding.data.shapes import JSON_NAME
from order_embedding.data.shapes_truth import load_scenes, truth_matrix
from order_embedding.demo import LEVELS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="demo folder holding data/")
    ap.add_argument("--split", default="train", choices=("train", "dev", "test"))
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    captions, scenes = load_scenes(args.dir / "data" / JSON_NAME, args.split)
    truth = truth_matrix(captions, scenes)
    n = len(scenes)
    share = (truth.sum(axis=1) - 1) / (n - 1)  # every caption is true of its own image
    level = np.tile(np.arange(1, len(LEVELS) + 1), n)
    print(f"{args.dir}, {args.split} split: {n} images, {len(captions)} captions")
    print(f"{'level':<6} {'mean %':>7} {'median %':>9} {'true matches among ' + str(args.batch_size - 1) + ' negatives':>34}")
    for k in LEVELS:
        s = share[level == k]
        print(f"{k:<6} {100 * s.mean():7.1f} {100 * np.median(s):9.1f} {(args.batch_size - 1) * s.mean():34.1f}")
    print(f"{'all':<6} {100 * share.mean():7.1f} {100 * np.median(share):9.1f} {(args.batch_size - 1) * share.mean():34.1f}")


if __name__ == "__main__":
    main()
