"""The main job: generate the shapes world, train the order and symmetric models on its
pixels and captions, and compare them on held-out retrieval and caption hierarchy."""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import options, runs
from .batching import batches_per_epoch
from .data import FOLD_SIZE, Split, load_split
from .data.shapes import JSON_NAME, PAIR_KINDS, generate_shapes, hierarchy_pairs_by_kind, length_controlled_pairs, word_count
from .data.shapes_truth import load_scenes, truth_matrix
from .evaluation import average_metrics, evaluate_embeddings
from .inference import LoadedModel, compute_errors, encode_sentences, encode_split, load_model
from .measures import exact_topk, paired_errors
from .relevance import average_precision, roc
from .report import results_table, rounded
from .train import trainer


@dataclass(frozen=True)
class DemoScale:
    """The size of one form of the demo: its world, its models and their schedule.

    ``n_train``, ``n_dev``, ``n_test``: images per split; ``image_size``: their side in pixels; ``dim``,
    ``dim_word``, ``dim_image``: the embedding, word and image-feature sizes; ``cnn_width``: the small CNN's
    first layer width; ``max_epochs`` and ``lr_update`` (the epoch count after which the learning rate drops
    tenfold, or None); ``optimizer`` and its learning rate ``lrate``; ``validation_epochs``: epochs between dev
    validations (0: only after the last update); ``fold_size``: the test images are scored as the mean over
    folds of this many; ``out``: the default folder; ``training``: what the printed table says of how both
    models were trained, and why.
    """

    name: str
    out: str
    n_train: int
    n_dev: int
    n_test: int
    image_size: int
    dim: int
    dim_word: int
    max_epochs: int
    lr_update: int | None
    optimizer: str
    lrate: float
    validation_epochs: int
    dim_image: int = 256
    cnn_width: int = 16
    batch_size: int = 128
    fold_size: int = FOLD_SIZE
    training: str = ""


#: The full demo. Its 5,000 test images are scored as COCO 1K, the mean over five folds of 1,000, so that a
#: seed's figures are not those of a single draw of 1,000 scenes. It trains with textbook Adam because the
#: original's rule (``adam_original``), whose first steps are several times larger, stalls the CNN learned
#: from pixels at this width. On dev (``experiments/demo_variants.py``), 256 dimensions order held-out captions
#: as well as 512 at two thirds of the time per update, the length-controlled pairs gain with every epoch up
#: to 36, and the original driver's learning rate, 0.001, beats 0.002 on them and on average precision on
#: two worlds; the drop after 32 lets a seed whose models start slowly get as far before it (docs/demo.md).
FULL = DemoScale(name="full", out="demo", n_train=8000, n_dev=1000, n_test=5000, image_size=48, dim=256,
                 dim_word=128, max_epochs=36, lr_update=32, optimizer="adam", lrate=0.001, validation_epochs=4,
                 training="the paper's loss and the original's learning rate, 0.001; textbook Adam, which the CNN "
                          "learned from pixels needs, with the rate / 10 after 32 of 36 epochs")

#: The quick demo, within a minute on two idle cores: a small model, one validation, and the original's
#: larger Adam steps, which are what lets so few updates learn anything of the caption hierarchy.
QUICK = DemoScale(name="quick", out="demo-quick", n_train=2000, n_dev=200, n_test=1000, image_size=48, dim=256,
                  dim_word=64, max_epochs=3, lr_update=None, optimizer="adam_original", lrate=0.002,
                  validation_epochs=0,
                  training="the paper's loss and the original's Adam for 3 epochs: too little to learn much "
                           "beyond caption length, and its figures move with the seed and thread count (docs/demo.md)")

#: The file beside the world's data set that records the seed and scale it was made with.
WORLD_RECORD = "world.json"
#: The two models the demo compares, by preset (and run folder) name.
MODELS = ("order", "symmetric")
#: Caption levels: a caption's place among its image's five, 1 the most general, 5 the full description.
LEVELS = (1, 2, 3, 4, 5)
#: Captions counted as general and as specific in precision@10 and average precision, by level.
GENERAL, SPECIFIC = (1, 2), (4, 5)
#: Points of the ROC curve written out (evenly spaced false-positive rates).
ROC_POINTS = 101


class DemoFolderError(ValueError):
    """A demo folder holds a world or models made with other settings than those asked for."""


def train_options(scale: DemoScale) -> dict[str, Any]:
    """The trainer's options for a demo scale."""
    updates_per_epoch = batches_per_epoch(scale.n_train, scale.batch_size)
    valid_freq = updates_per_epoch * (scale.validation_epochs or scale.max_epochs)
    return {"dim_image": scale.dim_image, "backbone": "small_cnn", "batch_size": scale.batch_size,
            "lrate": scale.lrate, "dispFreq": 10, "dim": scale.dim, "dim_word": scale.dim_word,
            "backbone_options": {"image_size": scale.image_size, "width": scale.cnn_width},
            "max_epochs": scale.max_epochs, "lr_update": scale.lr_update, "optimizer": scale.optimizer,
            "validFreq": valid_freq}


def world_record(scale: DemoScale, seed: int) -> dict[str, Any]:
    """What :data:`WORLD_RECORD` holds for a world generated for ``scale`` and ``seed``."""
    return {"seed": seed, "scale": scale.name, "n_train": scale.n_train, "n_dev": scale.n_dev,
            "n_test": scale.n_test, "image_size": scale.image_size}


def _mismatch(recorded: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The settings in which a record differs from the wanted one, as "name recorded (not wanted)"."""
    return ", ".join(f"{k} {recorded.get(k)!r} (not {v!r})" for k, v in wanted.items() if recorded.get(k) != v)


def check_folder(out_dir: Path, scale: DemoScale, seed: int) -> None:
    """Refuse a demo folder whose world or models were made with other settings (:class:`DemoFolderError`)."""
    hint = "use another --out, or --overwrite to replace them"
    data_dir = out_dir / "data"
    if (data_dir / JSON_NAME).exists():
        if not (data_dir / WORLD_RECORD).exists():
            raise DemoFolderError(f"{out_dir}: its world has no {WORLD_RECORD} saying how it was made; {hint}")
        recorded = runs.load_json(data_dir / WORLD_RECORD)
        differs = _mismatch(recorded if isinstance(recorded, dict) else {}, world_record(scale, seed))
        if differs:
            raise DemoFolderError(f"{out_dir}: its world was made with {differs}; {hint}")
    for preset in MODELS:
        config = out_dir / "runs" / preset / runs.CONFIG
        if config.exists():
            cfg = runs.load_json(config)
            recorded = cfg.get("train") if isinstance(cfg, dict) else None
            wanted = {**json.loads(json.dumps(train_options(scale))), "seed": seed}
            differs = _mismatch(recorded if isinstance(recorded, dict) else {}, wanted)
            if differs:
                raise DemoFolderError(f"{out_dir}: its {preset} model was trained with {differs}; {hint}")


def clear_folder(out_dir: Path) -> None:
    """Remove what a demo writes into ``out_dir`` (its world and its two run folders), nothing else."""
    for path in [out_dir / "data", *(out_dir / "runs" / preset for preset in MODELS)]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            raise DemoFolderError(f"{path} is not a folder; remove it or use another --out")


def word_count_accuracy(pairs: Sequence[tuple[str, str]]) -> float:
    """Percent of (general, specific) pairs the word-count rule orders correctly: the caption with fewer words
    (:func:`shapes.word_count`) is the more general one; equal counts score half."""
    general = np.array([word_count(g) for g, _ in pairs])
    specific = np.array([word_count(s) for _, s in pairs])
    return 100.0 * float(np.mean((general < specific) + 0.5 * (general == specific)))


def hierarchy_accuracy(model: LoadedModel, pairs: list[tuple[str, str]]) -> float:
    """Percent of (general, specific) caption pairs the model orders correctly.

    A pair counts when placing the general caption below the specific one violates the
    order less than the reverse, ``E(general, specific) < E(specific, general)``; ties
    count half, so a symmetric measure scores exactly 50.
    """
    return hierarchy_accuracies(model, {"pairs": pairs})["pairs"]


def hierarchy_accuracies(model: LoadedModel, pair_sets: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """:func:`hierarchy_accuracy` on each named set of pairs, rounded to 0.01."""
    unique = sorted({c for pairs in pair_sets.values() for pair in pairs for c in pair})  # encoded once each
    row = {c: i for i, c in enumerate(unique)}
    embedded = torch.from_numpy(encode_sentences(model, unique))
    out = {}
    for name, pairs in pair_sets.items():
        general = embedded[[row[g] for g, _ in pairs]]
        specific = embedded[[row[s] for _, s in pairs]]
        forward = paired_errors(model.config.method, general, specific).numpy()
        backward = paired_errors(model.config.method, specific, general).numpy()
        out[name] = round(100.0 * float(np.mean((forward < backward) + 0.5 * (forward == backward))), 2)
    return out


def precision_at_10(s: np.ndarray, im: np.ndarray, method: str, truth: np.ndarray,
                    cap2img: np.ndarray) -> dict[str, float]:
    """Percent of each caption's 10 best images that the caption truly describes (``truth``, captions x
    images), averaged over captions: all of them, the general ones and the specific ones (:data:`GENERAL`,
    :data:`SPECIFIC`)."""
    _, top = exact_topk(s, im, method, 10)
    share = np.take_along_axis(np.asarray(truth, dtype=bool), top, axis=1).mean(axis=1)
    place = caption_levels(cap2img)
    return {"all": 100.0 * float(share.mean()),
            "general": 100.0 * float(share[np.isin(place, GENERAL)].mean()),
            "specific": 100.0 * float(share[np.isin(place, SPECIFIC)].mean())}


def caption_levels(cap2img: np.ndarray) -> np.ndarray:
    """Each caption's level (:data:`LEVELS`): its place among its image's captions, which are in file order."""
    cap2img = np.asarray(cap2img)
    return np.arange(len(cap2img)) - np.searchsorted(cap2img, cap2img) + 1


def evaluate_fold(model: LoadedModel, fold: Split, truth: np.ndarray) -> dict[str, Any]:
    """A loaded model's figures on one test fold, ``truth`` saying which of its images each of its captions
    describes (:func:`shapes_truth.truth_matrix`): R@K and ranks, precision@10,
    average precision over every image each caption truly describes (percent; all captions, each level, the
    general and the specific ones), and the ROC of "the error is below a threshold" as the test for "this
    caption describes this image" (``roc``: its area and the true-positive rates at :data:`ROC_POINTS`
    false-positive rates)."""
    s, im = encode_split(model, fold)
    metrics = evaluate_embeddings(s, im, fold.cap2img, model.config.method)
    precision = precision_at_10(s, im, model.config.method, truth, fold.cap2img)
    errors = compute_errors(model, s, im)
    ap = average_precision(errors, truth)
    levels = caption_levels(fold.cap2img)
    by_level = {"all": ap.mean(), **{f"level {k}": ap[levels == k].mean() for k in LEVELS},
                "general": ap[np.isin(levels, GENERAL)].mean(), "specific": ap[np.isin(levels, SPECIFIC)].mean()}
    auc, _, tpr = roc(errors, truth, ROC_POINTS)
    return {**metrics, "precision_at_10": precision,
            "average_precision": {k: 100.0 * float(v) for k, v in by_level.items()},
            "roc": {"auc": auc, "tpr": tpr}}


def _mean_over_folds(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's mean over the folds; the ROC as the mean area and the mean true-positive rate at each
    false-positive rate (vertical averaging)."""
    mean = rounded(average_metrics([{k: v for k, v in f.items() if k != "roc"} for f in folds]))
    fpr = np.linspace(0.0, 1.0, ROC_POINTS)
    tpr = np.mean([f["roc"]["tpr"] for f in folds], axis=0)
    mean["roc"] = {"auc": round(float(np.mean([f["roc"]["auc"] for f in folds])), 4),
                   "fpr": [round(float(x), 4) for x in fpr], "tpr": [round(float(x), 4) for x in tpr]}
    return mean


def run_demo(out_dir: str | Path | None = None, scale: DemoScale = FULL, seed: int = 0, verbose: bool = True,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the whole pipeline in ``out_dir`` (default: the scale's folder) and return the results: per model,
    the test figures (the mean over the test folds, and each fold's), the hierarchy checks and its run folder;
    the word-count rule on the same hierarchy pairs; and what the run was (seed, scale, protocol).

    A world or model already in ``out_dir`` is used when it was made with the same seed and scale; one made
    otherwise raises :class:`DemoFolderError`, unless ``overwrite`` removes the demo's world and models first.
    Each model's run folder receives the results as ``results.json``.
    """
    seed = options.seed(seed)
    out_dir = Path(scale.out if out_dir is None else out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DemoFolderError(f"{out_dir} exists and is not a folder")
    if overwrite:
        clear_folder(out_dir)
    check_folder(out_dir, scale, seed)
    start = time.time()
    data_dir = out_dir / "data"
    json_path = data_dir / JSON_NAME
    if not json_path.exists():
        generate_shapes(data_dir, n_train=scale.n_train, n_dev=scale.n_dev, n_test=scale.n_test,
                        seed=seed, image_size=scale.image_size, verbose=verbose)
        runs.save_json(data_dir / WORLD_RECORD, world_record(scale, seed))
    pair_sets: dict[str, list[tuple[str, str]]] = hierarchy_pairs_by_kind(json_path, split="test", seed=seed)
    pair_sets = {"all": [p for kind in PAIR_KINDS for p in pair_sets[kind]], **pair_sets,
                 "length-controlled": length_controlled_pairs(json_path, split="test", seed=seed)}
    test = load_split(data_dir, "test")
    captions, scenes = load_scenes(json_path, "test")
    if captions != test.captions or not np.all(np.diff(test.cap2img) >= 0):
        raise ValueError(f"{json_path}: the test captions differ from those of the loaded split")
    n_folds = max(1, test.n_images // scale.fold_size)
    fold_size = min(scale.fold_size, test.n_images)
    folds = [test.fold(k, fold_size) for k in range(n_folds)]
    truths = [truth_matrix(fold.captions, scenes[k * fold_size:(k + 1) * fold_size]) for k, fold in enumerate(folds)]
    results: dict[str, Any] = {
        "seed": seed, "scale": asdict(scale),
        "protocol": (f"{test.n_images:,} held-out test images"
                     + (f", the mean over {n_folds} folds of {fold_size:,}" if n_folds > 1 else ", scored together")
                     + "; a caption describes an image when data/shapes_truth.py finds it true of the image's scene")}
    for preset in MODELS:
        run_dir = out_dir / "runs" / preset
        if not (run_dir / runs.BEST).exists():
            if verbose:
                print(f"training the {preset} model ({scale.n_train} images, {scale.max_epochs} epochs)")
            trainer(preset, name=preset, save_dir=str(out_dir / "runs"), data=str(data_dir), seed=seed,
                    verbose=verbose, resume=True, **train_options(scale))
        model = load_model(run_dir)
        figures = [evaluate_fold(model, fold, truth) for fold, truth in zip(folds, truths)]
        results[preset] = {**_mean_over_folds(figures),
                           "hierarchy": hierarchy_accuracies(model, pair_sets),
                           "folds": [{**rounded({k: v for k, v in f.items() if k != "roc"}),
                                      "roc_auc": round(f["roc"]["auc"], 4)} for f in figures],
                           "run_dir": str(run_dir)}
    results["baselines"] = {"word_count": {"hierarchy": {name: round(word_count_accuracy(pairs), 2)
                                                         for name, pairs in pair_sets.items()}}}
    results["hierarchy_pairs"] = {name: len(pairs) for name, pairs in pair_sets.items()}
    results["test_images"] = test.n_images
    results["seconds"] = round(time.time() - start, 1)
    results["threads"] = torch.get_num_threads()
    for preset in MODELS:
        write_run_results(results, preset)
    return results


def run_results(results: dict[str, Any], preset: str) -> dict[str, Any]:
    """The figures of one model's run as its ``results.json``: the model's own, and as baselines the
    word-count rule's and the other model's."""
    mine = results[preset]
    other = next(m for m in MODELS if m != preset)
    theirs = results[other]
    return {"kind": "demo", "model": preset, "protocol": results["protocol"], "seed": results["seed"],
            "scale": results["scale"]["name"],
            **{k: mine[k] for k in ("i2t", "t2i", "precision_at_10", "average_precision", "hierarchy", "roc")},
            "hierarchy_pairs": results["hierarchy_pairs"],
            "baselines": {**results["baselines"],
                          other: {k: theirs[k] for k in ("i2t", "t2i", "precision_at_10", "average_precision",
                                                         "hierarchy")} | {"roc_auc": theirs["roc"]["auc"]}}}


def write_run_results(results: dict[str, Any], preset: str) -> None:
    """Write one model's :func:`run_results` into its run folder."""
    runs.save_json(Path(results[preset]["run_dir"]) / "results.json", run_results(results, preset))


def format_demo(results: dict[str, Any]) -> str:
    """The printed summary: the paper-style table, the hierarchy checks beside the word-count rule, retrieval
    over every true match, and where the runs are."""
    rows = {name: results[name] for name in MODELS}
    n, folds = results["test_images"], len(rows["order"]["folds"])
    title = (f"shapes world (seed {results['seed']}, {results['scale']['name']} scale), {n:,} held-out test images"
             + ("" if folds == 1 else f": the mean over {folds} folds of {n // folds:,}"))
    training = results["scale"].get("training")
    lines = [results_table(rows, title), *([f"both models trained with {training}"] if training else []), ""]
    words = results["baselines"]["word_count"]["hierarchy"]
    lines += ["hierarchy check: percent of held-out (general, specific) caption pairs in which the model places the",
              "general caption below the specific one (ties half). The symmetric model ties every pair, so it scores",
              "50.0 on every line by construction; the baseline is the word-count rule (fewer words = more general,",
              "equal counts half). Length-controlled: the general caption has at least as many words.",
              f"  {'pairs':<18} {'n':>6}  {'order':>6}  {'word count':>10}"]
    for name, count in results["hierarchy_pairs"].items():
        lines.append(f"  {name:<18} {count:>6}  {rows['order']['hierarchy'][name]:6.1f}  {words[name]:10.1f}")
    lines.append("precision@10 (share of a test caption's 10 best images that the caption truly describes; "
                 f"general = captions {GENERAL[0]}-{GENERAL[-1]} of an image, specific = {SPECIFIC[0]}-{SPECIFIC[-1]}):")
    for name in rows:
        p = rows[name]["precision_at_10"]
        lines.append(f"  {name:<10} all {p['all']:5.1f}%   general {p['general']:5.1f}%   specific {p['specific']:5.1f}%")
    lines.append("average precision over every test image a caption truly describes (percent; mAP = all captions; "
                 "level 1 = the most general caption of an image, 5 = the full description; general = levels "
                 f"{GENERAL[0]}-{GENERAL[-1]}):")
    lines.append(f"  {'':<10} {'all':>5} {'general':>8}" + "".join(f" {'level ' + str(k):>8}" for k in LEVELS))
    for name in rows:
        ap = rows[name]["average_precision"]
        lines.append(f"  {name:<10} {ap['all']:5.1f} {ap['general']:8.1f}"
                     + "".join(f" {ap[f'level {k}']:8.1f}" for k in LEVELS))
    lines.append("does this caption describe this image, by a threshold on the error (all caption-image pairs): "
                 "ROC AUC " + ", ".join(f"{name} {rows[name]['roc']['auc']:.3f}" for name in rows))
    lines.append("")
    lines.append("run folders (for evaluate / serve; each holds results.json):")
    lines += [f"  {name:<10} {rows[name]['run_dir']}" for name in rows]
    lines.append(f"finished in {results['seconds']:.0f} s with {results['threads']} torch thread(s)")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write the demo results as JSON."""
    runs.atomic_write(path, json.dumps(results, indent=2).encode())
