"""The ``order-embedding`` command: one thin subcommand module per job."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..train import TrainingError

#: Subcommand modules under ``order_embedding.cli``; each defines ``register(subparsers)``
#: adding its parser(s) with ``set_defaults(func=...)``.
COMMANDS = [
    "train",
    "evaluate",
    "encode",
    "demo",
    "convert_legacy",
    "hypernym",
    "prepare",
    "extract_features",
    "serve",
    "index",
]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="order-embedding", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand; user errors print one line."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("order-embedding: interrupted", file=sys.stderr)
        return 130
    except (CLIError, TrainingError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        print(f"order-embedding {args.command}: error: {e}", file=sys.stderr)
        return 2
