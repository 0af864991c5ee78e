"""Image inputs for training and encoding: precomputed feature rows or decoded pixels."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from .. import runs
from ..backbones import SMALL_CNN_IMAGE_SIZE, is_torchvision_backbone

#: The ImageNet pixel statistics the torchvision networks were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


@contextmanager
def image_file(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``path`` opened by Pillow, when it is a regular file: a FIFO or a device is refused
    (:class:`runs.RunError`) without being read, so that decoding never blocks on it."""
    with os.fdopen(runs.open_regular(path, "image file"), "rb") as f, Image.open(f) as img:
        yield img


def load_pixels(paths: Sequence[str | os.PathLike], image_size: int, verbose: bool = False) -> np.ndarray:
    """Decode image files to a uint8 array ``N x 3 x image_size x image_size`` (RGB, resized)."""
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc="images", unit="img", disable=not verbose)):
        try:
            with image_file(path) as img:
                img = img.convert("RGB")
                if img.size != (image_size, image_size):
                    img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img).transpose(2, 0, 1)
        except runs.RunError:
            raise
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


# ------------------------------------------------- image files for torchvision backbones


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file decoded to RGB; truncated files are loaded as far as they go (as the original did)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    with image_file(path) as img:
        return img.convert("RGB")


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """``img`` scaled (bilinear) so that its shorter side is ``size`` pixels, keeping the aspect ratio."""
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img.resize(new, Image.Resampling.BILINEAR)


def crop_boxes(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """``(top, left)`` of the four corner crops and the centre crop of side ``size`` in a ``width x height`` image."""
    if size > min(width, height):
        raise ValueError(f"a {size}x{size} crop does not fit a {width}x{height} image")
    dy, dx = height - size, width - size
    return [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)]


def crop_tensor(x: torch.Tensor, size: int, n_crops: int) -> torch.Tensor:
    """``n_crops x C x size x size`` crops of a ``C x H x W`` image.

    One crop: the centre; ten: the four corners and the centre, then their mirror images.
    """
    if n_crops not in (1, 10):
        raise ValueError(f"crops must be 1 or 10, not {n_crops}")
    boxes = crop_boxes(x.shape[2], x.shape[1], size)
    if n_crops == 1:
        boxes = boxes[4:]
    out = torch.stack([x[:, top : top + size, left : left + size] for top, left in boxes])
    return torch.cat([out, out.flip(-1)]) if n_crops == 10 else out


def uint8_tensor(img: Image.Image) -> torch.Tensor:
    """An RGB image as a uint8 ``3 x H x W`` tensor."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())


def standardise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``... x 3 x H x W`` pixels scaled to [0, 1] and standardised per channel (float32, on x's device)."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return x.float().div_(255.0).sub_(m).div_(s)


def normalized_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """An RGB image as a float ``3 x H x W`` tensor in [0, 1], standardised per channel."""
    return standardise(uint8_tensor(img), mean, std)


def eval_crops_uint8(img: Image.Image, resize_size: int, image_size: int, n_crops: int) -> torch.Tensor:
    """uint8 ``n_crops x 3 x S x S`` evaluation crops: shorter side to ``resize_size``, then 1 or 10 crops."""
    return crop_tensor(uint8_tensor(resize_shorter(img, resize_size)), image_size, n_crops)


def eval_crops(img: Image.Image, resize_size: int, image_size: int, n_crops: int,
               mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The evaluation input of one image: shorter side to ``resize_size``, then 1 or 10 crops of ``image_size``."""
    return standardise(eval_crops_uint8(img, resize_size, image_size, n_crops), mean, std)


def train_crop(img: Image.Image, image_size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The training input of one image: a random resized crop of ``image_size``, mirrored with probability 1/2."""
    from torchvision import transforms

    img = transforms.RandomResizedCrop(image_size)(img)
    if torch.rand(()) < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return normalized_tensor(img, mean, std)


class _FileLoader:
    """Loads image files with a few threads; unreadable files raise one error naming the file."""

    def __init__(self, paths: Sequence[str | os.PathLike], workers: int) -> None:
        self.paths = [Path(p) for p in paths]
        self.workers = int(workers)

    def __len__(self) -> int:
        return len(self.paths)

    def _one(self, i: int, make) -> torch.Tensor:
        try:
            img = open_rgb(self.paths[i])
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {self.paths[i]}: {e}") from None
        return make(img)

    def load(self, indices: Sequence[int] | np.ndarray, make) -> torch.Tensor:
        """``make(image)`` of each image ``indices``, stacked."""
        idx = [int(i) for i in indices]
        if self.workers > 1 and len(idx) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.workers) as pool:
                return torch.stack(list(pool.map(lambda i: self._one(i, make), idx)))
        return torch.stack([self._one(i, make) for i in idx])


def _loader_options(options: dict) -> tuple[int, int, int, int]:
    return (int(options.get("image_size", 224)), int(options.get("resize_size", 256)),
            int(options.get("crops", 10)), int(options.get("workers", 0)))


class ImageFiles:
    """Image files of a split, decoded lazily into evaluation crops (``N x crops x 3 x S x S`` per slice)."""

    #: images per forward pass when encoding (each brings ``crops`` network inputs)
    batch_size = 32

    def __init__(self, paths: Sequence[str | os.PathLike], options: dict,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.image_size, self.resize_size, self.crops, workers = _loader_options(options)
        self.loader = _FileLoader(paths, workers)
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.loader)

    def __getitem__(self, index: slice) -> torch.Tensor:
        """The crops of the images in a slice."""
        if not isinstance(index, slice):
            raise TypeError("ImageFiles supports slices only")
        return self.loader.load(range(*index.indices(len(self))), lambda img: eval_crops(
            img, self.resize_size, self.image_size, self.crops, self.mean, self.std))


class BackboneImageSource:
    """Image files for a torchvision backbone: random resized crops and flips to train, evaluation crops otherwise."""

    def __init__(self, paths: Sequence[str | os.PathLike], options: dict) -> None:
        self.files = ImageFiles(paths, options)

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, indices: np.ndarray, train: bool = False) -> torch.Tensor:
        """Augmented ``B x 3 x S x S`` crops when training, else ``B x crops x 3 x S x S``."""
        f = self.files
        if train:
            return f.loader.load(indices, lambda img: train_crop(img, f.image_size, f.mean, f.std))
        return f.loader.load(indices, lambda img: eval_crops(img, f.resize_size, f.image_size, f.crops, f.mean, f.std))


def pixel_inputs(paths: Sequence[str | os.PathLike], backbone: str, options: dict, train: bool,
                 verbose: bool = False):
    """Image files as the input of a pixel backbone: for training an :class:`ImageSource` (a torchvision
    backbone's augmented crops, or the small CNN's decoded pixels), otherwise what ``encode_images`` takes
    (evaluation crops decoded per batch, or decoded pixels)."""
    if is_torchvision_backbone(backbone):
        return BackboneImageSource(paths, options) if train else ImageFiles(paths, options)
    size = int(options.get("image_size", SMALL_CNN_IMAGE_SIZE))
    return PixelSource(paths, size, verbose) if train else load_pixels(paths, size, verbose)
