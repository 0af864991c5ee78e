"""The ``order-embedding`` command: one thin subcommand module per job."""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

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
    "entailment",
    "prepare",
    "extract_features",
    "serve",
    "index",
]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"order-embedding: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = Parser(prog="order-embedding", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand; user errors print one line."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return int(e.code or 0)
    with warnings.catch_warnings():  # warnings print as one line while the command runs
        warnings.showwarning = _print_warning
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("order-embedding: interrupted", file=sys.stderr)
            return 130
        except (CLIError, TrainingError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            print(f"order-embedding {args.command}: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # an unreadable or unwritable file, a full disk
            where = f"{e.filename}: " if e.filename else ""
            print(f"order-embedding {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
            return 1
