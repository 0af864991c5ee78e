"""Why the full demo's dev scores swing: the step size, or the BatchNorm statistics of the CNN trained from
scratch.

Trains the demo's order model on the seed's full-scale shapes world (the one ``demo`` generates) one
epoch at a time (the trainer resumed each time) and keeps a copy of each epoch's checkpoint in the run
folder as ``epochNN.safetensors``; epochs whose copy is already there are not trained again. For each
epoch it prints the dev selection score (text-to-image R@1 + R@5 + R@10 on the 1,000 dev images) twice,
with the same weights:

- with the BatchNorm running statistics that validation uses, and
- with the BatchNorm statistics recomputed exactly over all training images,

and the dev hierarchy check. If the running statistics caused the swings, the second column would be
steady where the first one jumps; if the weights cause them, both jump together. Then the largest change
between consecutive epochs of each column, and the CPU model.

The model, optimizer and schedule default to the full demo's (``demo.FULL``); ``--dim``, ``--dim-word``
and ``--image-size`` train other widths or image sizes on the same kind of world (a world already in
OUT is used as it is, so give each image size its own ``--out``).

Usage: python experiments/demo_swings.py [--out /tmp/demo-swings] [--optimizer adam_original]
       [--lr-update 8] [--epochs 12] [--seed 0] [--dim 512] [--dim-word 128] [--image-size 48]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # machine.py
from machine import cpu_model  # noqa: E402

from order_embedding import runs
from order_embedding.cli.types import COUNT
from order_embedding.data import load_split
from order_embedding.data.shapes import generate_shapes, hierarchy_pairs
from order_embedding.demo import FULL, hierarchy_accuracy, train_options
from order_embedding.inference import LoadedModel, load_model, split_images
from order_embedding.train import trainer, validate
from order_embedding.vision.images import pixels_to_tensor


def recompute_batchnorm(model: LoadedModel, train_pixels, batch_size: int = 256) -> LoadedModel:
    """A copy of ``model`` whose BatchNorm layers hold the exact mean and variance over ``train_pixels``."""
    net = copy.deepcopy(model.net).eval()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch seen
        m.train()
    with torch.no_grad():
        for i in range(0, len(train_pixels), batch_size):
            net.encode_image(pixels_to_tensor(train_pixels[i : i + batch_size]))
    return LoadedModel(net.eval(), model.vocab, model.options, model.run_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/demo-swings"))
    ap.add_argument("--name", default="order", help="run folder name under OUT/runs")
    ap.add_argument("--optimizer", default=FULL.optimizer)
    ap.add_argument("--lr-update", type=lambda v: None if v == "none" else int(v), default=FULL.lr_update,
                    help="epochs before the tenfold learning-rate drop, or 'none'")
    ap.add_argument("--epochs", type=int, default=FULL.max_epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=COUNT, default=FULL.dim, help="embedding size")
    ap.add_argument("--dim-word", type=COUNT, default=FULL.dim_word, help="word embedding size")
    ap.add_argument("--image-size", type=COUNT, default=FULL.image_size, help="side of the rendered images")
    args = ap.parse_args()

    data = args.out / "data"
    if not (data / "dataset_shapes.json").exists():
        generate_shapes(data, n_train=FULL.n_train, n_dev=FULL.n_dev, n_test=FULL.n_test, seed=args.seed,
                        image_size=args.image_size, verbose=False)
    pairs = hierarchy_pairs(data / "dataset_shapes.json", split="dev", seed=args.seed)
    run_dir = args.out / "runs" / args.name
    scale = dataclasses.replace(FULL, dim=args.dim, dim_word=args.dim_word, image_size=args.image_size)
    options = {**train_options(scale), "optimizer": args.optimizer, "lr_update": args.lr_update}
    train = dev = train_pixels = dev_pixels = None
    rows = []
    print(f"order model, dim {args.dim}, dim_word {args.dim_word}, {args.image_size}-pixel images, "
          f"{args.optimizer}, lr_update {args.lr_update}, seed {args.seed}")
    print("epoch  dev score (running BN)  dev score (recomputed BN)  dev hierarchy %")
    for epoch in range(1, args.epochs + 1):
        saved = run_dir / f"epoch{epoch:02d}.safetensors"
        if not saved.exists():
            trainer("order", name=args.name, save_dir=str(args.out / "runs"), data=str(data), seed=args.seed,
                    resume=True, verbose=False, **{**options, "max_epochs": epoch})
            shutil.copy(run_dir / runs.LAST, saved)
        model = load_model(run_dir, checkpoint=saved.name)
        if train is None:
            train, dev = load_split(data, "train"), load_split(data, "dev")
            train_pixels, dev_pixels = split_images(model, train), split_images(model, dev)
        running = validate(model, dev, dev_pixels)["score"]
        recomputed = validate(recompute_batchnorm(model, train_pixels), dev, dev_pixels)["score"]
        rows.append((running, recomputed))
        print(f"{epoch:5d}  {running:22.1f}  {recomputed:25.1f}  {hierarchy_accuracy(model, pairs):15.1f}", flush=True)
    for k, name in enumerate(("running BN", "recomputed BN")):
        steps = [abs(b[k] - a[k]) for a, b in zip(rows, rows[1:])]
        print(f"largest change between consecutive epochs, {name}: {max(steps, default=float('nan')):.1f}")
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
