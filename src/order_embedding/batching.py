"""Minibatches of caption-image pairs for training, and padding of token lists."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from .options import integer
from .vocab import EOS


def batches_per_epoch(n_images: int, batch_size: int) -> int:
    """How many batches :func:`epoch_batches` yields in one epoch over ``n_images`` captioned images."""
    full, rest = divmod(n_images, batch_size)
    return full + (rest >= 2)


def epoch_batches(
    cap2img: np.ndarray | Sequence[int], n_images: int, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(caption_indices, image_indices)`` int64 batches.

    Every image that has at least one caption appears exactly once, in random
    order, paired with one of its captions drawn uniformly at random. Batches have
    ``batch_size`` pairs; a final partial batch is yielded when it has at least 2
    pairs (a single pair has no negatives) and dropped otherwise.
    """
    c2i = np.asarray(cap2img)
    if c2i.ndim != 1 or (c2i.size and not np.issubdtype(c2i.dtype, np.integer)):
        raise ValueError(f"cap2img must be a 1-D integer array, got shape {c2i.shape} dtype {c2i.dtype}")
    c2i = c2i.astype(np.int64, copy=False)
    n_images = integer(n_images, "n_images", 0)
    batch_size = integer(batch_size, "batch_size", 2)
    if c2i.size and (c2i.min() < 0 or c2i.max() >= n_images):
        bad = int(np.flatnonzero((c2i < 0) | (c2i >= n_images))[0])
        raise ValueError(f"cap2img[{bad}] = {c2i[bad]} is outside 0..{n_images - 1}")

    # In a random permutation of the captions, the first caption of each image is
    # a uniform draw among that image's captions.
    perm = rng.permutation(c2i.size)
    images, first = np.unique(c2i[perm], return_index=True)
    captions = perm[first]
    order = rng.permutation(images.size)
    images, captions = images[order], captions[order]
    for start in range(0, images.size, batch_size):
        stop = min(start + batch_size, images.size)
        if stop - start < 2:
            break
        yield captions[start:stop].astype(np.int64), images[start:stop].astype(np.int64)


def pad_batch(token_lists: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of a batch of sentences, each followed by one end-of-sentence 0 and padded with 0.

    Returns ``tokens`` (LongTensor ``[B, T]``, ``T`` = longest sentence + 1) and
    ``lengths`` (LongTensor ``[B]``, counting the end-of-sentence token).
    """
    if len(token_lists) == 0:
        raise ValueError("pad_batch needs at least one sentence")
    lengths = torch.tensor([len(t) + 1 for t in token_lists], dtype=torch.long)
    tokens = torch.full((len(token_lists), int(lengths.max())), EOS, dtype=torch.long)
    for row, toks in enumerate(token_lists):
        if len(toks):
            tokens[row, : len(toks)] = torch.as_tensor(list(toks), dtype=torch.long)
    return tokens, lengths
