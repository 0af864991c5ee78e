"""Known matches: every image each caption of a split truly describes, not only the image it was written for.

A data set may hold ``{split}_matches.npy`` in its folder: a ``uint8`` array of shape
``(captions, ceil(images / 8))``, row ``c`` the bits (``numpy.packbits`` order) of the images caption
``c`` describes. The shapes world writes one for its training split; training with ``true_matches``
reads it (docs/training.md).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .. import runs
from .splits import DataError, Split, open_features, resolve_data_dir

#: The file name of a split's known matches in its data folder.
MATCHES_NAME = "{split}_matches.npy"


def matches_path(data: str | os.PathLike, split: str) -> Path:
    """Where a data set keeps the known matches of ``split``: ``{split}_matches.npy`` in its folder (the
    folder of a Karpathy JSON file given as the data)."""
    root = resolve_data_dir(data)
    return (root.parent if root.is_file() else root) / MATCHES_NAME.format(split=split)


def save_matches(path: str | os.PathLike, truth: np.ndarray) -> None:
    """Write a captions x images boolean matrix as a known-matches file.

    >>> import tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> save_matches(d + "/train_matches.npy", np.eye(3, dtype=bool))
    """
    truth = np.asarray(truth)
    if truth.ndim != 2 or truth.dtype != bool:
        raise ValueError(f"known matches must be a 2-D boolean matrix, got {truth.dtype} of shape {truth.shape}")
    buffer = io.BytesIO()
    np.save(buffer, np.packbits(truth, axis=1), allow_pickle=False)
    runs.atomic_write(path, buffer.getvalue())


class KnownMatches:
    """The known matches of one split, checked against it: :meth:`block` answers for any captions and images."""

    def __init__(self, bits: np.ndarray, n_images: int) -> None:
        self.bits, self.n_images = bits, n_images

    def block(self, captions: np.ndarray, images: np.ndarray) -> np.ndarray:
        """``out[i, j]``: whether caption ``captions[i]`` describes image ``images[j]``."""
        rows = np.unpackbits(self.bits[np.asarray(captions)], axis=1, count=self.n_images)
        return rows[:, np.asarray(images)].astype(bool)


def load_matches(data: str | os.PathLike, split: Split) -> KnownMatches:
    """The known matches of ``split`` from its data set (:func:`matches_path`), checked to have one row per
    caption and one bit per image, with each caption's own image among its matches (:class:`DataError`)."""
    path = matches_path(data, split.name)
    if not path.exists():
        raise DataError(f"{path}: no known matches for split {split.name!r} (true_matches needs this file; "
                        "the shapes world writes it)")
    bits = open_features(path)
    width = (split.n_images + 7) // 8
    if bits.dtype != np.uint8 or bits.shape != (split.n_captions, width):
        raise DataError(f"{path}: expected uint8 of shape ({split.n_captions}, {width}) for {split.n_captions} captions "
                        f"and {split.n_images} images, got {bits.dtype} of shape {bits.shape}")
    own = (bits[np.arange(split.n_captions), split.cap2img // 8] >> (7 - split.cap2img % 8)) & 1
    if not own.all():
        first = int(np.flatnonzero(own == 0)[0])
        raise DataError(f"{path}: caption {first} does not match its own image {split.cap2img[first]}")
    return KnownMatches(np.asarray(bits), split.n_images)
