"""Does counting a caption's other true images as positives (``true_matches``) close the demo's gap? Dev
figures of the order model trained with the paper's loss and with ``true_matches``, on the same world.

Generates the shapes world of a demo scale (``--scale quick`` or ``full``) and seed in OUT (or uses the one
there), trains the order model both ways (``--epochs`` overrides the scale's), and prints on the dev split
only (settings are chosen on dev): the hierarchy check on all dev pairs and on the length-controlled set
beside the word-count rule, average precision over every true match (all captions, general, specific),
ROC AUC, and text-to-image R@1/5/10; then the CPU model.

Usage: python experiments/demo_true_matches.py OUT [--scale quick] [--epochs 12] [--seed 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # machine.py
from machine import cpu_model  # noqa: E402

from order_embedding import demo, runs  # noqa: E402
from order_embedding.cli.types import COUNT, SEED  # noqa: E402
from order_embedding.data import load_split  # noqa: E402
from order_embedding.data.shapes import (  # noqa: E402
    JSON_NAME,
    PAIR_KINDS,
    generate_shapes,
    hierarchy_pairs_by_kind,
    length_controlled_pairs,
)
from order_embedding.data.shapes_truth import load_scenes, truth_matrix  # noqa: E402
from order_embedding.inference import load_model  # noqa: E402
from order_embedding.train import trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the world and the two runs")
    ap.add_argument("--scale", choices=("quick", "full"), default="quick", help="demo scale of world and model")
    ap.add_argument("--epochs", type=COUNT, help="epochs per model (default: the scale's)")
    ap.add_argument("--seed", type=SEED, default=0, help="seed of the world and the training")
    args = ap.parse_args()
    scale = demo.QUICK if args.scale == "quick" else demo.FULL
    if args.epochs:
        scale = dataclasses.replace(scale, max_epochs=args.epochs)
    data_dir, json_path = args.out / "data", args.out / "data" / JSON_NAME
    if not json_path.exists():
        generate_shapes(data_dir, n_train=scale.n_train, n_dev=scale.n_dev, n_test=scale.n_test, seed=args.seed,
                        image_size=scale.image_size, verbose=False)
    by_kind = hierarchy_pairs_by_kind(json_path, split="dev", seed=args.seed)
    pairs = {"all": [p for kind in PAIR_KINDS for p in by_kind[kind]],
             "length-controlled": length_controlled_pairs(json_path, split="dev", seed=args.seed)}
    dev = load_split(data_dir, "dev")
    _, scenes = load_scenes(json_path, "dev")
    truth = truth_matrix(dev.captions, scenes)
    words = {name: demo.word_count_accuracy(set_pairs) for name, set_pairs in pairs.items()}
    print(f"{args.scale} world, seed {args.seed}, {scale.max_epochs} epochs; dev: {dev.n_images} images, "
          f"{len(pairs['all'])} hierarchy pairs, {len(pairs['length-controlled'])} length-controlled")
    print(f"{'loss':<14} {'hier all':>8} {'length-c.':>9} {'mAP':>6} {'AP gen.':>7} {'AP spec.':>8} {'AUC':>6} "
          f"{'R@1':>5} {'R@5':>5} {'R@10':>5}")
    print(f"{'word count':<14} {words['all']:8.1f} {words['length-controlled']:9.1f}")
    for name, true_matches in (("paper", False), ("true_matches", True)):
        run_dir = args.out / "runs" / name
        if not (run_dir / runs.BEST).exists():
            trainer("order", name=name, save_dir=str(args.out / "runs"), data=str(data_dir), seed=args.seed,
                    verbose=False, resume=True, **{**demo.train_options(scale), "true_matches": true_matches})
        model = load_model(run_dir)
        f = demo.evaluate_fold(model, dev, truth)
        h = demo.hierarchy_accuracies(model, pairs)
        ap, t = f["average_precision"], f["t2i"]
        print(f"{name:<14} {h['all']:8.1f} {h['length-controlled']:9.1f} {ap['all']:6.1f} {ap['general']:7.1f} "
              f"{ap['specific']:8.1f} {f['roc']['auc']:6.3f} {t['R@1']:5.1f} {t['R@5']:5.1f} {t['R@10']:5.1f}",
              flush=True)
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
