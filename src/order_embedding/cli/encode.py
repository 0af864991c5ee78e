"""``order-embedding encode``: captions, image features or image files to an ``.npy`` of embeddings."""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from ..api import encode_images, images_from_files, load_model
from ..index import encode_captions_file
from ..runs import atomic_write


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("encode", help="embed captions or image features into the model's space",
                       description="Captions: one pre-tokenised sentence per line. Images: an .npy of CNN features, "
                                   "or (for models trained from pixels) a list of image files.")
    p.add_argument("run", metavar="RUN", help="run folder, or an original snapshot prefix")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--captions", type=Path, metavar="TXT", help="text file, one caption per line")
    src.add_argument("--features", type=Path, metavar="NPY", help="image features, one row per image")
    src.add_argument("--images", type=Path, metavar="TXT",
                     help="image file paths, one per line (models with a pixel backbone)")
    p.add_argument("--image-root", type=Path, metavar="DIR",
                   help="folder the --images paths are relative to (default: the list's folder)")
    p.add_argument("--out", type=Path, required=True, metavar="NPY", help="where to write the embeddings")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", help="torch device (default: cuda when present)")
    p.set_defaults(func=run)


def read_captions(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (captions, or image paths); empty lines and bad encodings are errors naming the line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line} is not UTF-8") from None
    lines = text.splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{path}: line {i} is empty")
    return lines


def run(args: argparse.Namespace) -> int:
    model = load_model(args.run, device=args.device)
    if args.captions is not None:  # streamed in chunks to the .npy: memory does not grow with the file
        n, dim = encode_captions_file(model, args.captions, args.out, batch_size=args.batch_size, verbose=True)
        print(f"{args.out}: {n} x {dim}")
        return 0
    if args.images is not None:
        root = args.image_root if args.image_root is not None else args.images.parent
        features = images_from_files(model, [root / line for line in read_captions(args.images)], verbose=True)
    else:
        features = np.load(args.features, mmap_mode="r", allow_pickle=False)
    out = encode_images(model, features, verbose=True, batch_size=args.batch_size)
    buf = io.BytesIO()
    np.save(buf, out)
    atomic_write(args.out, buf.getvalue())
    print(f"{args.out}: {out.shape[0]} x {out.shape[1]}")
    return 0
