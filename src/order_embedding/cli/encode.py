"""``order-embedding encode``: captions, image features or image files to an ``.npy`` of embeddings."""
from __future__ import annotations

import argparse
import io
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..data.splits import InputWarning, open_features
from ..data.text import read_caption_chunks
from ..inference import (
    encode_captions_file,
    encode_images,
    images_from_files,
    load_model,
)
from ..runs import atomic_write, check_output, remove_stale
from ..vocab import UNK_WORD, Vocabulary
from .help import parser_texts
from .types import COUNT, DEVICE, output_path


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
    p.add_argument("--out", type=output_path, required=True, metavar="NPY", help="where to write the embeddings")
    p.add_argument("--batch-size", type=COUNT, default=128, help="sentences or images per forward pass (default: 128)")
    p.add_argument("--device", type=DEVICE, help="torch device (default: cuda when present)")
    p.set_defaults(func=run)


def read_captions(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (captions, or image paths); empty lines and bad encodings are errors naming the line."""
    return [line for chunk in read_caption_chunks(path) for line in chunk]


#: Unknown words a warning line shows.
SHOWN_UNKNOWN = 5


def report_unknown(vocab: Vocabulary, captions: Iterable[str]) -> list[str]:
    """Warn, in one line, of the words of ``captions`` the vocabulary does not have (encoded as ``<unk>``): how
    many and the first :data:`SHOWN_UNKNOWN`; returns them all."""
    unknown = vocab.unknown(captions)
    if unknown:
        more = " ..." if len(unknown) > SHOWN_UNKNOWN else ""
        warnings.warn(f"{len(unknown)} word(s) not in the model's vocabulary, encoded as {UNK_WORD}: "
                      f"{' '.join(unknown[:SHOWN_UNKNOWN])}{more}", InputWarning, stacklevel=2)
    return unknown


def image_list(path: Path, root: Path | None) -> list[Path]:
    """The image files listed in ``path``, one per line, relative to ``root`` (default: the list's folder)."""
    return [(root if root is not None else path.parent) / line for line in read_captions(path)]


def run(args: argparse.Namespace) -> int:
    check_output(args.out, "--out", [args.run, args.captions, args.features, args.images])
    remove_stale(args.out)  # what a killed encode of the same output left
    model = load_model(args.run, device=args.device)
    if args.captions is not None:  # streamed in chunks to the .npy: memory does not grow with the file
        n, dim = encode_captions_file(model, args.captions, args.out, batch_size=args.batch_size, verbose=True)
        report_unknown(model.vocab, (line for chunk in read_caption_chunks(args.captions) for line in chunk))
        print(f"{args.out}: {n} x {dim}")
        return 0
    if args.images is not None:
        features = images_from_files(model, image_list(args.images, args.image_root), verbose=True)
    else:
        features = open_features(args.features)
    out = encode_images(model, features, verbose=True, batch_size=args.batch_size,
                        source=str(args.features if args.images is None else args.images))
    buf = io.BytesIO()
    np.save(buf, out)
    atomic_write(args.out, buf.getvalue())
    print(f"{args.out}: {out.shape[0]} x {out.shape[1]}")
    return 0
