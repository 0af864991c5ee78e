"""``order-embedding demo``: the whole pipeline on the generated shapes world, no download."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import format_demo, run_demo, write_json
from .help import parser_texts
from .types import COUNT0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", **parser_texts("demo"))
    p.add_argument("--out", type=Path, default=Path("demo"), help="folder for data and runs (default: ./demo)")
    p.add_argument("--quick", action="store_true", help="a small version (2,000 training images, 45 updates per model) that finishes in under a minute")
    p.add_argument("--seed", type=COUNT0, default=0, help="seed of the generated world and the training (default: 0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = run_demo(args.out, quick=args.quick, seed=args.seed, verbose=not args.quiet)
    print(format_demo(results))
    if args.json:
        write_json(results, args.json)
    return 0
