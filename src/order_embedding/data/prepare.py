"""A data folder in the original layout from a Karpathy ``dataset_*.json`` file.

For each of ``train`` (Karpathy ``restval`` folded in), ``dev`` (Karpathy ``val``) and
``test`` this writes ``{split}.txt`` (one tokenised caption per line, the captions of
each image together), ``{split}_images.txt`` (one image path per image, in the same
order, relative to the data folder) and, when images have different numbers of
captions, ``{split}_cap2img.txt``. Image files absent from disk are listed in
``missing_images.txt``. Features come next, from ``order-embedding extract-features``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .. import runs
from .npy import NpyFileError, NpyRows
from .splits import DataError, Split, load_karpathy_json, load_split

#: The splits written, and the Karpathy splits each is made of (data.py folds restval into train).
SPLITS = ("train", "dev", "test")
MISSING = "missing_images.txt"


def _present_splits(json_path: Path) -> set[str]:
    """The Karpathy split names used in the file (train, restval, val, test ...)."""
    images = load_karpathy_json(json_path)["images"]
    return {im["split"] for im in images if isinstance(im, dict) and isinstance(im.get("split"), str)}


def first_captions(split: Split, k: int) -> Split:
    """The split with at most the first ``k`` captions of each image."""
    seen = np.zeros(split.n_images, dtype=np.int64)
    keep = []
    for c, i in enumerate(split.cap2img):
        if seen[i] < k:
            keep.append(c)
            seen[i] += 1
    return Split(split.name, [split.captions[c] for c in keep], split.cap2img[keep], None, split.image_files,
                 split.image_root)


def _uniform(cap2img: np.ndarray, n_images: int) -> bool:
    """Whether captions come in equal consecutive groups per image (so no cap2img file is needed)."""
    return n_images > 0 and cap2img.size % n_images == 0 and bool(
        np.array_equal(cap2img, np.arange(cap2img.size) // (cap2img.size // n_images)))


def _lines(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _check_out(out_dir: Path, json_path: Path) -> None:
    """Refuse an output folder inside a run or index folder, or one whose files would replace the dataset file."""
    for folder in (out_dir, *out_dir.resolve().parents):
        kind = runs.folder_kind(folder)
        if kind in ("run", "index"):
            raise DataError(f"--out {out_dir}: lies inside the {kind} folder {folder}; write the data elsewhere")
    names = {f"{n}{suffix}" for n in SPLITS for suffix in (".txt", "_images.txt", "_cap2img.txt")} | {MISSING}
    if json_path.resolve().parent == out_dir.resolve() and json_path.name in names:
        raise DataError(f"--out {out_dir}: would replace the dataset file {json_path}; write the data elsewhere")


def _check_features(out_dir: Path, name: str, n_images: int) -> None:
    """Refuse a split whose image count differs from feature files already in the data folder (before any write)."""
    for path in sorted(out_dir.glob(f"images/*/{name}.npy")):
        try:
            rows = NpyRows(path)
        except NpyFileError:
            continue  # an unreadable feature file is reported when the split is loaded
        count = rows.shape[0]
        rows.close()
        if count != n_images:
            raise DataError(f"{path} has {count} images but split {name!r} of the dataset file has {n_images}; "
                            "nothing was written")


def prepare(dataset_json: str | os.PathLike, out: str | os.PathLike, images: str | os.PathLike | None = None,
            five: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Write the original layout for a Karpathy file into ``out``; returns counts and missing images per split.

    ``images`` is the folder the JSON's ``filepath/filename`` are relative to (default:
    the JSON's folder); ``five`` keeps only the first 5 captions of each image. Every
    file is checked before any is written, and they are written together
    (:func:`~order_embedding.runs.write_files`): a failure leaves the folder as it was.
    """
    json_path = Path(dataset_json)
    if not json_path.is_file():
        raise DataError(f"dataset file {json_path} not found")
    root = Path(images) if images is not None else json_path.parent
    if not root.is_dir():
        raise DataError(f"image folder {root} not found")
    out_dir = Path(out)
    _check_out(out_dir, json_path)
    present = _present_splits(json_path)
    wanted = {"train": {"train", "restval"}, "dev": {"val", "dev"}, "test": {"test"}}
    if not present & wanted["train"]:
        raise DataError(f"{json_path}: no train images (splits present: {', '.join(sorted(map(str, present)))})")
    report: dict[str, Any] = {"splits": {}, "missing": 0, "image_root": str(root)}
    missing_lines: list[str] = []
    files: dict[str, bytes | None] = {}
    for name in SPLITS:
        if not present & wanted[name]:
            continue
        split = load_split(json_path, name, image_root=root)
        if five:
            split = first_captions(split, 5)
        _check_features(out_dir, name, split.n_images)
        names = split.image_files or []
        rel = [Path(os.path.relpath(root / f, out_dir)).as_posix() for f in names]
        missing = [f for f in tqdm(names, desc=f"{name}: checking images", unit="img", disable=not verbose,
                                   leave=False) if not (root / f).is_file()]
        missing_lines += [f"{name}\t{root / f}" for f in missing]
        files[f"{name}.txt"] = _lines(split.captions)
        files[f"{name}_images.txt"] = _lines(rel)
        uniform = _uniform(split.cap2img, split.n_images)
        files[f"{name}_cap2img.txt"] = None if uniform else _lines([str(int(i)) for i in split.cap2img])
        report["splits"][name] = {"images": split.n_images, "captions": split.n_captions, "missing": len(missing)}
        report["missing"] += len(missing)
    missing_path = out_dir / MISSING
    files[MISSING] = _lines(missing_lines) if missing_lines else None
    runs.write_files(out_dir, files)
    for name in report["splits"]:
        load_split(out_dir, name)  # the folder as the trainer will read it
    if verbose:
        for name, r in report["splits"].items():
            print(f"{name}: {r['images']} images, {r['captions']} captions"
                  + (f", {r['missing']} image file(s) missing" if r["missing"] else ""))
        if missing_lines:
            print(f"{len(missing_lines)} image file(s) not found under {root}: listed in {missing_path}")
    return report
