"""CNN image features for a prepared data folder (reference section 4).

For each split with an image list (``{split}_images.txt``) this writes
``images/{name}/{split}.npy``: one float32 row per image, the network's features
averaged over the crops (ten: shorter side resized, four corners + centre and their
mirrors; or the centre alone), then L2-normalised. The reference features are VGG19
fc7 after its ReLU with ten crops (``name`` ``10crop``).

A long run writes into ``{split}.npy.partial`` (a memory-mapped ``.npy``) and records
the rows done in ``{split}.progress.json`` after every batch; run again, it resumes
where it stopped. Unreadable images give zero rows and are listed in
``{split}_unreadable.txt`` (index, path, error) rather than stopping the run.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import runs
from ..backbones import TORCHVISION_DIMS, torchvision_features
from ..data import DataError, load_split, resolve_data_dir
from .images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_crops_uint8,
    image_paths,
    open_rgb,
    standardise,
)

#: Networks ``extract_features`` knows: the torchvision ones and CLIP (through open_clip).
CNNS = sorted(TORCHVISION_DIMS) + ["clip"]


@dataclass
class Extractor:
    """A feature network with the input it expects."""

    net: nn.Module
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    resize_size: int
    description: str


class _ClipImage(nn.Module):
    """An open_clip model's image tower as a plain module."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # open_clip's models are untyped: encode_image is not known to nn.Module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)


def _clip_extractor(model_name: str, pretrained: str, weights: str, image_size: int | None,
                    resize_size: int | None) -> Extractor:
    try:
        import open_clip
    except ImportError:
        raise ValueError("CLIP features need open_clip: pip install 'order-embedding[clip]'") from None
    source = None if weights == "none" else (pretrained if weights == "imagenet" else weights)
    try:
        model = open_clip.create_model(model_name, pretrained=source)
    except RuntimeError as e:
        raise ValueError(f"CLIP model {model_name!r} with weights {source!r}: {e}") from None
    visual = model.visual
    size = visual.image_size if isinstance(visual.image_size, int) else int(visual.image_size[0])
    size = image_size or size
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    net = _ClipImage(model).eval()
    with torch.no_grad():
        dim = int(net(torch.zeros(1, 3, size, size)).shape[1])
    return Extractor(net, dim, mean, std, size, resize_size or round(size * 256 / 224),
                     f"CLIP {model_name} ({source or 'random weights'})")


def build_extractor(cnn: str, weights: str = "imagenet", image_size: int | None = None,
                    resize_size: int | None = None, clip_model: str = "ViT-B-32",
                    clip_pretrained: str = "openai") -> Extractor:
    """The feature network ``cnn`` (see :data:`CNNS`) in eval mode.

    ``weights``: ``"imagenet"`` (pretrained; for CLIP the ``clip_pretrained`` tag),
    ``"none"`` (random) or a local weights file. Crops are ``image_size`` (default 224,
    CLIP: its own) cut from images whose shorter side is ``resize_size`` (default
    ``image_size * 256 / 224``).
    """
    if cnn == "clip":
        return _clip_extractor(clip_model, clip_pretrained, weights, image_size, resize_size)
    if cnn not in TORCHVISION_DIMS:
        raise ValueError(f"unknown cnn {cnn!r}; choose one of {', '.join(CNNS)}")
    size = image_size or 224
    net = torchvision_features(cnn, weights).eval()
    what = {"imagenet": "ImageNet weights", "none": "random weights"}.get(weights, f"weights {weights}")
    return Extractor(net, TORCHVISION_DIMS[cnn], IMAGENET_MEAN, IMAGENET_STD, size,
                     resize_size or round(size * 256 / 224), f"{cnn} ({what})")


def default_name(cnn: str, crops: int) -> str:
    """The feature folder name: ``10crop``/``1crop`` for VGG19 (the reference's), else ``{cnn}-{crops}crop``."""
    return f"{crops}crop" if cnn == "vgg19" else f"{cnn}-{crops}crop"


class CropDataset(torch.utils.data.Dataset):
    """uint8 evaluation crops of image files; an unreadable file gives zeros and its error message."""

    def __init__(self, paths: Sequence[Path], start: int, extractor: Extractor, crops: int) -> None:
        self.paths = list(paths)
        self.start = start
        self.size, self.resize = extractor.image_size, extractor.resize_size
        self.mean, self.std = extractor.mean, extractor.std
        self.crops = crops

    def __len__(self) -> int:
        return len(self.paths) - self.start

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        path = self.paths[self.start + i]
        try:
            img = open_rgb(path)
            return eval_crops_uint8(img, self.resize, self.size, self.crops), ""
        except (OSError, ValueError, SyntaxError) as e:
            return torch.zeros(self.crops, 3, self.size, self.size, dtype=torch.uint8), f"{type(e).__name__}: {e}"


@torch.no_grad()
def features_of(extractor: Extractor, crops: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """L2-normalised float32 features of ``B x n x 3 x S x S`` crops (mean over the ``n`` crops).

    uint8 crops are standardised with the extractor's mean and std first.
    """
    b, n = crops.shape[:2]
    x = crops.flatten(0, 1)
    if x.dtype == torch.uint8:
        x = standardise(x, extractor.mean, extractor.std)
    amp = amp and crops.device.type == "cuda"
    if amp:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(crops.device.type, dtype=torch.float16, enabled=amp):
        f = extractor.net(x)
    f = f.float().view(b, n, -1).mean(dim=1)
    return F.normalize(f, p=2, dim=1, eps=1e-12)


def _list_digest(files: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(files).encode("utf-8")).hexdigest()


def extract_split(extractor: Extractor, paths: Sequence[Path], out_path: Path, crops: int, settings: dict[str, Any],
                  batch_size: int = 32, workers: int = 0, device: torch.device | None = None, amp: bool = False,
                  verbose: bool = True, desc: str = "features") -> dict[str, Any]:
    """Features of ``paths`` into ``out_path`` (resuming a stopped run); returns ``{images, unreadable}``.

    ``settings`` identifies the run; a partial file from different settings is an error.
    """
    device = device or torch.device("cpu")
    partial = out_path.with_name(out_path.name + ".partial")
    progress_path = out_path.with_name(out_path.stem + ".progress.json")
    n = len(paths)
    settings = {**settings, "n": n, "dim": extractor.dim}
    done, unreadable = 0, []
    if partial.exists() and progress_path.exists():
        progress = runs.load_json(progress_path)
        if progress.get("settings") != settings:
            raise ValueError(f"{partial} was started with other settings ({progress.get('settings')}); "
                             "delete it and its .progress.json, or pass the same options")
        out = np.lib.format.open_memmap(partial, mode="r+")
        done, unreadable = int(progress["done"]), [list(u) for u in progress["unreadable"]]
    else:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, extractor.dim))
    dataset = CropDataset(paths, done, extractor, crops)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    net = extractor.net.to(device).eval()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input shape for the whole run
        if amp:
            net.to(memory_format=torch.channels_last)
    bar = tqdm(total=n, initial=done, desc=desc, unit="img", disable=not verbose, dynamic_ncols=True)
    row = done
    for x, errors in loader:
        f = features_of(extractor, x.to(device, non_blocking=True), amp).cpu().numpy()
        for j, err in enumerate(errors):
            if err:
                f[j] = 0.0
                unreadable.append([row + j, str(paths[row + j]), err])
        out[row : row + len(f)] = f
        row += len(f)
        out.flush()
        runs.save_json(progress_path, {"settings": settings, "done": row, "unreadable": unreadable})
        bar.update(len(f))
    bar.close()
    del net
    out.flush()
    del out
    os.replace(partial, out_path)
    progress_path.unlink()
    report = out_path.with_name(out_path.stem + "_unreadable.txt")
    if unreadable:
        runs.atomic_write(report, "".join(f"{i}\t{p}\t{e}\n" for i, p, e in unreadable).encode("utf-8"))
    elif report.exists():
        report.unlink()
    return {"images": n, "unreadable": unreadable}


def image_splits(data_dir: Path) -> list[str]:
    """Splits of a prepared folder that list image files (``{split}_images.txt``): train, dev, test first."""
    found = sorted(p.name[: -len("_images.txt")] for p in data_dir.glob("*_images.txt"))
    order = {"train": 0, "dev": 1, "val": 1, "test": 2}
    return sorted(found, key=lambda s: (order.get(s, 3), s))


def extract_features(
    data: str | os.PathLike,
    cnn: str = "vgg19",
    crops: int = 10,
    weights: str = "imagenet",
    name: str | None = None,
    splits: Sequence[str] | None = None,
    image_root: str | os.PathLike | None = None,
    batch_size: int = 32,
    workers: int = 0,
    device: str | torch.device | None = None,
    amp: bool = False,
    overwrite: bool = False,
    image_size: int | None = None,
    resize_size: int | None = None,
    clip_model: str = "ViT-B-32",
    clip_pretrained: str = "openai",
    verbose: bool = True,
) -> dict[str, dict[str, Any]]:
    """Write ``images/{name}/{split}.npy`` for the splits of a prepared data folder; returns a report per split.

    A split whose feature file exists is skipped (``"skipped": True``) unless ``overwrite``.
    """
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, not {crops!r}")
    if batch_size < 1 or workers < 0:
        raise ValueError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}")
    data_dir = resolve_data_dir(data)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: expected a prepared data folder (run 'order-embedding prepare' first)")
    name = name or default_name(cnn, crops)
    splits = list(splits) if splits else image_splits(data_dir)
    if not splits:
        raise DataError(f"{data_dir}: no {{split}}_images.txt image lists (run 'order-embedding prepare' first)")
    out_dir = data_dir / "images" / name
    todo: list[tuple[str, Path, list[str], str | None]] = []
    report: dict[str, dict[str, Any]] = {}
    for split in splits:
        out_path = out_dir / f"{split}.npy"
        if out_path.exists():
            if not overwrite:
                report[split] = {"skipped": True, "path": str(out_path)}
                continue
            out_path.unlink()
        s = load_split(data_dir, split, cnn=name, image_root=image_root)
        if s.image_files is None:
            raise DataError(f"{data_dir}: split {split!r} lists no image files ({split}_images.txt)")
        todo.append((split, out_path, s.image_files, s.image_root))
    if not todo:
        return report
    extractor = build_extractor(cnn, weights, image_size, resize_size, clip_model, clip_pretrained)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    if verbose:
        tqdm.write(f"{extractor.description}: {crops} crop(s) of {extractor.image_size}px from images resized to "
                   f"{extractor.resize_size}px, {extractor.dim}-d, on {dev} -> {out_dir}")
    for split, out_path, files, root in todo:
        settings = {"cnn": cnn, "crops": crops, "weights": str(weights), "image_size": extractor.image_size,
                    "resize_size": extractor.resize_size, "files": _list_digest(files),
                    "clip": [clip_model, clip_pretrained] if cnn == "clip" else None}
        result = extract_split(extractor, image_paths(files, root), out_path, crops, settings, batch_size, workers,
                               dev, amp, verbose, desc=split)
        report[split] = {**result, "path": str(out_path)}
        if verbose and result["unreadable"]:
            tqdm.write(f"{split}: {len(result['unreadable'])} unreadable image(s) (zero rows), listed in "
                       f"{out_path.with_name(split + '_unreadable.txt')}")
    return report
