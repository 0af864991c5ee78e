"""The main job: generate the shapes world, train the order and symmetric models on its
pixels and captions, and compare them on held-out retrieval and caption hierarchy."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs
from .batching import batches_per_epoch
from .data import FOLD_SIZE, Split, load_split
from .data.shapes import generate_shapes, hierarchy_pairs
from .data.shapes_truth import is_true_of, load_scenes, parse_caption
from .evaluation import average_metrics, evaluate_embeddings
from .inference import LoadedModel, encode_sentences, encode_split, load_model
from .measures import exact_topk, paired_errors
from .report import results_table, rounded
from .train import trainer

#: Demo scale: training and dev images, the side of the rendered images, the embedding and word sizes
#: (``dim``, ``dim_word``), epochs, the epoch count after which the learning rate drops tenfold
#: (``lr_update``), the optimizer, validations per epoch (0: only after the last update) and test images.
#: The full scale's 5,000 test images are scored as COCO 1K, the mean over five folds of 1,000, so that a
#: seed's figures are not those of a single draw of 1,000 scenes; the quick scale has one fold. The full
#: scale trains with textbook Adam: with the original's rule (``adam_original``), whose first steps are
#: 3.5-6.5 times larger, its CNN learned from pixels stalled (dev score flat for 3 epochs at dim 256).
#: 32 epochs before the drop (against 8, 12, 18 or 24) let every seed's models get as far before it, a
#: seed whose models start slowly included; 4 at the lower rate let the dev scores settle, and more of
#: them wear the caption hierarchy down (the general captions are pushed away from the other images they
#: describe). Its wider text model (dim 512 and 128-d words, against 256 and 64) places the general
#: caption above the specific one more often; the README's demo section has the figures. In the quick
#: scale's 48 updates the original's larger steps are what learns the caption hierarchy; its small model
#: and single validation keep it within a minute on two cores.
FULL: dict[str, Any] = {"n_train": 8000, "n_dev": 1000, "image_size": 48, "dim": 512, "dim_word": 128, "max_epochs": 36,
        "lr_update": 32, "optimizer": "adam", "validations_per_epoch": 1, "n_test": 5000}
QUICK: dict[str, Any] = {"n_train": 2000, "n_dev": 200, "image_size": 48, "dim": 256, "dim_word": 64, "max_epochs": 3,
         "lr_update": None, "optimizer": "adam_original", "validations_per_epoch": 0, "n_test": 1000}

#: Architecture and optimisation shared by both scales: the paper's model with smaller widths (the CNN's
#: input side is the scale's ``image_size``; the scale sets ``dim`` and ``dim_word``).
MODEL: dict[str, Any] = {"dim_image": 256, "backbone": "small_cnn", "cnn_width": 16, "batch_size": 128,
         "lrate": 0.002, "dispFreq": 10}


def train_options(scale: dict[str, Any]) -> dict[str, Any]:
    """The trainer's options for a demo scale (:data:`FULL` or :data:`QUICK`)."""
    updates_per_epoch = batches_per_epoch(scale["n_train"], MODEL["batch_size"])
    per_epoch = scale["validations_per_epoch"]
    valid_freq = max(1, updates_per_epoch // per_epoch) if per_epoch else updates_per_epoch * scale["max_epochs"]
    model = {k: v for k, v in MODEL.items() if k != "cnn_width"}
    return {**model, "dim": scale["dim"], "dim_word": scale["dim_word"],
            "backbone_options": {"image_size": scale["image_size"], "width": MODEL["cnn_width"]},
            "max_epochs": scale["max_epochs"], "lr_update": scale["lr_update"], "optimizer": scale["optimizer"],
            "validFreq": valid_freq}


def hierarchy_accuracy(model: LoadedModel, pairs: list[tuple[str, str]]) -> float:
    """Percent of (general, specific) caption pairs the model orders correctly.

    A pair counts when placing the general caption above the specific one violates the
    order less than the reverse, ``E(general, specific) < E(specific, general)``; ties
    count half, so a symmetric measure scores exactly 50.
    """
    unique = sorted({c for pair in pairs for c in pair})  # a caption is in several pairs; encode it once
    row = {c: i for i, c in enumerate(unique)}
    embedded = torch.from_numpy(encode_sentences(model, unique))
    general = embedded[[row[g] for g, _ in pairs]]
    specific = embedded[[row[s] for _, s in pairs]]
    forward = paired_errors(model.config.method, general, specific).numpy()
    backward = paired_errors(model.config.method, specific, general).numpy()
    return 100.0 * float(np.mean((forward < backward) + 0.5 * (forward == backward)))


#: Captions counted as general and as specific in precision@10, by their place among their image's five
#: captions (1 = the most general, 5 = the full description).
GENERAL, SPECIFIC = (1, 2), (4, 5)


def precision_at_10(s: np.ndarray, im: np.ndarray, method: str, captions: list[str],
                    scenes: list[list[dict[str, Any]]], cap2img: np.ndarray) -> dict[str, float]:
    """Percent of each caption's 10 best images that the caption truly describes, averaged over captions:
    all of them, the general ones and the specific ones (:data:`GENERAL`, :data:`SPECIFIC`)."""
    _, top = exact_topk(s, im, method, 10)
    claims = [parse_caption(c) for c in captions]
    share = np.array([np.mean([is_true_of(claim, scenes[j]) for j in row]) for claim, row in zip(claims, top)])
    cap2img = np.asarray(cap2img)
    place = np.arange(len(cap2img)) - np.searchsorted(cap2img, cap2img) + 1  # 1..5 within each image
    return {"all": 100.0 * float(share.mean()),
            "general": 100.0 * float(share[np.isin(place, GENERAL)].mean()),
            "specific": 100.0 * float(share[np.isin(place, SPECIFIC)].mean())}


def evaluate_fold(model: LoadedModel, fold: Split, scenes: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """R@K, ranks and precision@10 of a loaded model on one test fold whose images show ``scenes``."""
    s, im = encode_split(model, fold)
    metrics = evaluate_embeddings(s, im, fold.cap2img, model.config.method)
    precision = precision_at_10(s, im, model.config.method, fold.captions, scenes, fold.cap2img)
    return {**metrics, "precision_at_10": precision}


def run_demo(out_dir: str | Path = "demo", quick: bool = False, seed: int = 0, verbose: bool = True) -> dict[str, Any]:
    """Run the whole pipeline; returns per-model test metrics (the mean over the test folds, and each fold's),
    hierarchy accuracy and run folders."""
    out_dir = Path(out_dir)
    scale = QUICK if quick else FULL
    start = time.time()
    data_dir = out_dir / "data"
    json_path = data_dir / "dataset_shapes.json"
    if not json_path.exists():
        generate_shapes(data_dir, n_train=scale["n_train"], n_dev=scale["n_dev"], n_test=scale["n_test"],
                        seed=seed, image_size=scale["image_size"], verbose=verbose)
    pairs = hierarchy_pairs(json_path, split="test", seed=seed)
    test = load_split(data_dir, "test")
    captions, scenes = load_scenes(json_path, "test")
    if captions != test.captions or not np.all(np.diff(test.cap2img) >= 0):
        raise ValueError(f"{json_path}: the test captions differ from those of the loaded split")
    n_folds = max(1, test.n_images // FOLD_SIZE)
    results: dict[str, Any] = {}
    for preset in ("order", "symmetric"):
        run_dir = out_dir / "runs" / preset
        if not (run_dir / runs.BEST).exists():
            if verbose:
                print(f"training the {preset} model ({scale['n_train']} images, {scale['max_epochs']} epochs)")
            trainer(preset, name=preset, save_dir=str(out_dir / "runs"), data=str(data_dir), seed=seed,
                    verbose=verbose, resume=True, **train_options(scale))
        model = load_model(run_dir)
        folds = [evaluate_fold(model, test.fold(k, FOLD_SIZE), scenes[k * FOLD_SIZE:(k + 1) * FOLD_SIZE])
                 for k in range(n_folds)]
        results[preset] = {**rounded(average_metrics(folds)),
                           "hierarchy_accuracy": round(hierarchy_accuracy(model, pairs), 2),
                           "folds": [rounded(f) for f in folds], "run_dir": str(run_dir)}
    results["seconds"] = round(time.time() - start, 1)
    results["test_images"] = test.n_images
    results["hierarchy_pairs"] = len(pairs)
    return results


def format_demo(results: dict[str, Any]) -> str:
    """The printed summary: the paper-style table, hierarchy accuracy and where the runs are."""
    rows = {name: results[name] for name in ("order", "symmetric")}
    n, folds = results["test_images"], len(rows["order"]["folds"])
    title = (f"shapes world, {n:,} held-out test images" if folds == 1 else
             f"shapes world, {n:,} held-out test images: the mean over {folds} folds of {n // folds:,}")
    lines = [results_table(rows, title), ""]
    lines.append(f"hierarchy check ({results['hierarchy_pairs']} held-out (general, specific) caption pairs; "
                 "chance 50%):")
    for name in rows:
        lines.append(f"  {name:<10} general caption placed above the specific one: {rows[name]['hierarchy_accuracy']:.1f}%")
    lines.append("precision@10 (share of a test caption's 10 best images that the caption truly describes; "
                 f"general = captions {GENERAL[0]}-{GENERAL[-1]} of an image, specific = {SPECIFIC[0]}-{SPECIFIC[-1]}):")
    for name in rows:
        p = rows[name]["precision_at_10"]
        lines.append(f"  {name:<10} all {p['all']:5.1f}%   general {p['general']:5.1f}%   specific {p['specific']:5.1f}%")
    lines.append("")
    lines.append("run folders (for evaluate / serve):")
    lines += [f"  {name:<10} {rows[name]['run_dir']}" for name in rows]
    lines.append(f"finished in {results['seconds']:.0f} s")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write the demo results as JSON."""
    runs.atomic_write(path, json.dumps(results, indent=2).encode())
