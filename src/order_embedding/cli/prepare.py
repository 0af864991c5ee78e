"""``order-embedding prepare``: a Karpathy dataset file to the data layout the trainer reads."""
from __future__ import annotations

import argparse

from ..data.prepare import prepare
from .help import parser_texts
from .types import output_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", **parser_texts("prepare"))
    p.add_argument("dataset_json", metavar="DATASET_JSON", help="Karpathy dataset_{coco,flickr8k,flickr30k}.json")
    p.add_argument("--images", metavar="ROOT", help="folder the JSON's image paths are relative to "
                                                      "(default: the JSON's folder)")
    p.add_argument("--out", type=output_path, required=True, metavar="DATA_DIR", help="data folder to write")
    p.add_argument("--five", action="store_true", help="keep only the first 5 captions of each image (as the original)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prepare(args.dataset_json, args.out, images=args.images, five=args.five, verbose=not args.quiet)
    return 0
