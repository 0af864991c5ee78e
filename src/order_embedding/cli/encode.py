"""``order-embedding encode``: captions, image features or image files to an ``.npy`` of embeddings."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from ..data.text import read_caption_chunks
from ..inference import (
    encode_captions_file,
    encode_images,
    images_from_files,
    load_model,
)
from ..runs import atomic_write
from .help import parser_texts
from .types import COUNT, DEVICE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", **parser_texts("encode"))
    p.add_argument("run", metavar="RUN", help="run folder, or an original snapshot prefix")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--captions", type=Path, metavar="TXT", help="text file, one caption per line")
    src.add_argument("--features", type=Path, metavar="NPY", help="image features, one row per image")
    src.add_argument("--images", type=Path, metavar="TXT",
                     help="image file paths, one per line (models with a pixel backbone)")
    p.add_argument("--image-root", type=Path, metavar="DIR",
                   help="folder the --images paths are relative to (default: the list's folder)")
    p.add_argument("--out", type=Path, required=True, metavar="NPY", help="where to write the embeddings")
    p.add_argument("--batch-size", type=COUNT, default=128, help="sentences or images per forward pass (default: 128)")
    p.add_argument("--device", type=DEVICE, help="torch device (default: cuda when present)")
    p.set_defaults(func=run)


def read_captions(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (captions, or image paths); empty lines and bad encodings are errors naming the line."""
    return [line for chunk in read_caption_chunks(path) for line in chunk]


def image_list(path: Path, root: Path | None) -> list[Path]:
    """The image files listed in ``path``, one per line, relative to ``root`` (default: the list's folder)."""
    return [(root if root is not None else path.parent) / line for line in read_captions(path)]


def run(args: argparse.Namespace) -> int:
    model = load_model(args.run, device=args.device)
    if args.captions is not None:  # streamed in chunks to the .npy: memory does not grow with the file
        n, dim = encode_captions_file(model, args.captions, args.out, batch_size=args.batch_size, verbose=True)
        print(f"{args.out}: {n} x {dim}")
        return 0
    if args.images is not None:
        features = images_from_files(model, image_list(args.images, args.image_root), verbose=True)
    else:
        features = np.load(args.features, mmap_mode="r", allow_pickle=False)
    out = encode_images(model, features, verbose=True, batch_size=args.batch_size)
    buf = io.BytesIO()
    np.save(buf, out)
    atomic_write(args.out, buf.getvalue())
    print(f"{args.out}: {out.shape[0]} x {out.shape[1]}")
    return 0
