"""Image inputs for training and encoding: precomputed feature rows or decoded pixels."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm


class ImageSource(Protocol):
    """Anything that yields model-ready image batches by image index."""

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray, train: bool = False) -> torch.Tensor: ...


class FeatureSource:
    """Rows of a (possibly memory-mapped) feature matrix."""

    def __init__(self, features: np.ndarray) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, indices: np.ndarray, train: bool = False) -> torch.Tensor:
        """Feature rows ``indices`` as a float32 tensor."""
        return torch.from_numpy(np.ascontiguousarray(self.features[np.asarray(indices)], dtype=np.float32))


def load_pixels(paths: Sequence[str | os.PathLike], image_size: int, verbose: bool = False) -> np.ndarray:
    """Decode image files to a uint8 array ``N x 3 x image_size x image_size`` (RGB, resized)."""
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc="images", unit="img", disable=not verbose)):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                out[i] = np.asarray(img).transpose(2, 0, 1)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
    return out


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``N x 3 x H x W`` pixels as the float input of the small backbones (centred on 0)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0).sub_(0.5)


class PixelSource:
    """Images decoded once into memory, served as float tensors for a pixel backbone."""

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int, verbose: bool = False) -> None:
        self.pixels = load_pixels(paths, image_size, verbose)

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, indices: np.ndarray, train: bool = False) -> torch.Tensor:
        """Pixel batch ``indices`` as a float tensor."""
        return pixels_to_tensor(self.pixels[np.asarray(indices)])


def image_paths(files: Sequence[str], root: str | os.PathLike | None) -> list[Path]:
    """Image file paths resolved against an image root (or taken as they are)."""
    base = Path(root) if root is not None else None
    return [base / f if base is not None else Path(f) for f in files]
