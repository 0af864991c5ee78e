"""``order-embedding convert-legacy``: turn an original snapshot pair into a run folder."""
from __future__ import annotations

import argparse

from ..legacy import convert_legacy
from .help import parser_texts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-legacy", **parser_texts("convert_legacy"))
    p.add_argument("prefix", metavar="PREFIX", help="snapshot path without extension, e.g. snapshots/order")
    p.add_argument("out_dir", metavar="OUT_RUN_DIR", help="run folder to create (must be new or empty)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(convert_legacy(args.prefix, args.out_dir))
    return 0
