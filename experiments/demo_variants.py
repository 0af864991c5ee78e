"""Which demo models and schedules to ship: dev figures and training time of the demo's models trained with
variants of a demo scale (embedding size, epochs, learning-rate drop, training options), on one world.

Generates the shapes world of ``--scale`` for ``--seed`` in OUT (or uses the one there), trains each variant
named with ``--variants`` (both models with ``--symmetric``, else the order model only) in
``OUT/runs/VARIANT-MODEL`` (a run already there is only evaluated again), and prints on the dev split only
(settings are chosen on dev): the hierarchy check on all dev pairs and on the length-controlled set beside
the word-count rule, average precision over every true match (all captions, general, specific), ROC AUC,
text-to-image R@1/5/10, and each run's training time in seconds; then the CPU model and thread count.
Run variants in parallel as separate processes with ``--threads 1`` on a 2-core machine.

Usage: python experiments/demo_variants.py OUT --variants d256-e24 full [--scale full] [--symmetric] [--threads 1]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # machine.py
from machine import cpu_model  # noqa: E402

from order_embedding import demo, runs  # noqa: E402
from order_embedding.cli.threads import cpu_threads  # noqa: E402
from order_embedding.cli.types import SEED  # noqa: E402
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

#: Each variant's changes to the scale's fields (``demo.DemoScale``), and training options added to its own.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "scale": ({}, {}),
    # the embedding sizes and schedules docs/demo.md compares, at the learning rate they were compared at
    "d512-e18": ({"dim": 512, "max_epochs": 18, "lr_update": 16, "lrate": 0.002}, {}),
    "d256-e36": ({"dim": 256, "max_epochs": 36, "lr_update": 32, "lrate": 0.002}, {}),
    "d256-e24": ({"dim": 256, "max_epochs": 24, "lr_update": 20, "lrate": 0.002}, {}),
    "d256-e18": ({"dim": 256, "max_epochs": 18, "lr_update": 16, "lrate": 0.002}, {}),
    "drop-after-24": ({"lr_update": 24, "lrate": 0.002}, {}),
    "lrate-0.002": ({"lrate": 0.002}, {}),
    "true-matches": ({}, {"true_matches": True}),
    "d256-e24-true-matches": ({"dim": 256, "max_epochs": 24, "lr_update": 20, "lrate": 0.002}, {"true_matches": True}),
}


def training_seconds(run_dir: Path) -> float:
    """Seconds from the first to the last train record of a run (its training time, validations included)."""
    times = [r["time"] for r in runs.read_metrics(run_dir) if r["event"] == "train"]
    return times[-1] - times[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the world and the runs")
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["scale"],
                    help="variants to run (scale: the scale as the demo has it)")
    ap.add_argument("--scale", choices=("full", "quick"), default="full", help="the demo scale varied")
    ap.add_argument("--symmetric", action="store_true", help="train the symmetric model too")
    ap.add_argument("--seed", type=SEED, default=0, help="seed of the world and the training")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of each training")
    args = ap.parse_args()
    base = demo.FULL if args.scale == "full" else demo.QUICK
    data_dir, json_path = args.out / "data", args.out / "data" / JSON_NAME
    if not json_path.exists():
        generate_shapes(data_dir, n_train=base.n_train, n_dev=base.n_dev, n_test=base.n_test, seed=args.seed,
                        image_size=base.image_size, verbose=False)
    by_kind = hierarchy_pairs_by_kind(json_path, split="dev", seed=args.seed)
    pairs = {"all": [p for kind in PAIR_KINDS for p in by_kind[kind]],
             "length-controlled": length_controlled_pairs(json_path, split="dev", seed=args.seed)}
    dev = load_split(data_dir, "dev")
    _, scenes = load_scenes(json_path, "dev")
    truth = truth_matrix(dev.captions, scenes)
    words = {name: demo.word_count_accuracy(set_pairs) for name, set_pairs in pairs.items()}
    print(f"{args.scale} world, seed {args.seed}; dev: {dev.n_images} images, {len(pairs['all'])} hierarchy pairs, "
          f"{len(pairs['length-controlled'])} length-controlled")
    print(f"{'run':<20} {'hier all':>8} {'length-c.':>9} {'mAP':>6} {'AP gen.':>7} {'AP spec.':>8} {'AUC':>6} "
          f"{'R@1':>5} {'R@5':>5} {'R@10':>5} {'train s':>8}")
    print(f"{'word count':<20} {words['all']:8.1f} {words['length-controlled']:9.1f}")
    models = demo.MODELS if args.symmetric else ("order",)
    with cpu_threads(args.threads):
        for variant in args.variants:
            changes, extra = VARIANTS[variant]
            scale = dataclasses.replace(base, **changes)
            for preset in models:
                name = f"{variant}-{preset}"
                run_dir = args.out / "runs" / name
                if not (run_dir / runs.BEST).exists():
                    trainer(preset, name=name, save_dir=str(args.out / "runs"), data=str(data_dir), seed=args.seed,
                            verbose=False, resume=True, **demo.train_options(scale), **extra)
                model = load_model(run_dir)
                f = demo.evaluate_fold(model, dev, truth)
                h = demo.hierarchy_accuracies(model, pairs)
                ap, t = f["average_precision"], f["t2i"]
                row = {"hier all": h["all"], "length-c.": h["length-controlled"], "mAP": ap["all"],
                       "AP gen.": ap["general"], "AP spec.": ap["specific"], "AUC": f["roc"]["auc"], **t,
                       "train s": training_seconds(run_dir)}
                (run_dir / "dev.json").write_text(json.dumps(row, indent=1))
                print(f"{name:<20} {h['all']:8.1f} {h['length-controlled']:9.1f} {ap['all']:6.1f} "
                      f"{ap['general']:7.1f} {ap['specific']:8.1f} {f['roc']['auc']:6.3f} {t['R@1']:5.1f} "
                      f"{t['R@5']:5.1f} {t['R@10']:5.1f} {row['train s']:8.0f}", flush=True)
    print(f"CPU: {cpu_model()}; {args.threads} thread(s) per training")


if __name__ == "__main__":
    main()
