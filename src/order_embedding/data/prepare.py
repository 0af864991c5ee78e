"""A data folder in the original layout from a Karpathy ``dataset_*.json`` file.

For each of ``train`` (Karpathy ``restval`` folded in), ``dev`` (Karpathy ``val``) and
``test`` this writes ``{split}.txt`` (one tokenised caption per line, the captions of
each image together), ``{split}_images.txt`` (one image path per image, in the same
order, relative to the data folder) and, when images have different numbers of
captions, ``{split}_cap2img.txt``. Image files absent from disk are listed in
``missing_images.txt``. Features come next, from ``order-embedding extract-features``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..runs import atomic_write
from .splits import DataError, Split, load_split

#: The splits written, and the Karpathy splits each is made of (data.py folds restval into train).
SPLITS = ("train", "dev", "test")
MISSING = "missing_images.txt"


def _present_splits(json_path: Path) -> set[str]:
    """The Karpathy split names used in the file (train, restval, val, test ...)."""
    try:
        with open(json_path, encoding="utf-8") as f:
            images = json.load(f).get("images", [])
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise DataError(f"{json_path}: not a readable Karpathy dataset file ({e})") from None
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


def _write_lines(path: Path, lines: list[str]) -> None:
    atomic_write(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def prepare(dataset_json: str | os.PathLike, out: str | os.PathLike, images: str | os.PathLike | None = None,
            five: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Write the original layout for a Karpathy file into ``out``; returns counts and missing images per split.

    ``images`` is the folder the JSON's ``filepath/filename`` are relative to (default:
    the JSON's folder); ``five`` keeps only the first 5 captions of each image.
    """
    json_path = Path(dataset_json)
    if not json_path.is_file():
        raise DataError(f"dataset file {json_path} not found")
    root = Path(images) if images is not None else json_path.parent
    if not root.is_dir():
        raise DataError(f"image folder {root} not found")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = _present_splits(json_path)
    wanted = {"train": {"train", "restval"}, "dev": {"val", "dev"}, "test": {"test"}}
    if not present & wanted["train"]:
        raise DataError(f"{json_path}: no train images (splits present: {', '.join(sorted(map(str, present)))})")
    report: dict[str, Any] = {"splits": {}, "missing": 0, "image_root": str(root)}
    missing_lines: list[str] = []
    for name in SPLITS:
        if not present & wanted[name]:
            continue
        split = load_split(json_path, name, image_root=root)
        if five:
            split = first_captions(split, 5)
        files = split.image_files or []
        rel = [Path(os.path.relpath(root / f, out_dir)).as_posix() for f in files]
        missing = [f for f in tqdm(files, desc=f"{name}: checking images", unit="img", disable=not verbose,
                                   leave=False) if not (root / f).is_file()]
        missing_lines += [f"{name}\t{root / f}" for f in missing]
        _write_lines(out_dir / f"{name}.txt", split.captions)
        _write_lines(out_dir / f"{name}_images.txt", rel)
        c2i = out_dir / f"{name}_cap2img.txt"
        if _uniform(split.cap2img, split.n_images):
            if c2i.exists():
                c2i.unlink()
        else:
            _write_lines(c2i, [str(int(i)) for i in split.cap2img])
        check = load_split(out_dir, name)
        report["splits"][name] = {"images": check.n_images, "captions": check.n_captions, "missing": len(missing)}
        report["missing"] += len(missing)
    missing_path = out_dir / MISSING
    if missing_lines:
        _write_lines(missing_path, missing_lines)
    elif missing_path.exists():
        missing_path.unlink()
    if verbose:
        for name, r in report["splits"].items():
            print(f"{name}: {r['images']} images, {r['captions']} captions"
                  + (f", {r['missing']} image file(s) missing" if r["missing"] else ""))
        if missing_lines:
            print(f"{len(missing_lines)} image file(s) not found under {root}: listed in {missing_path}")
    return report
