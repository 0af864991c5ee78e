"""The ``order-embedding`` command: one thin subcommand module per job."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
import warnings

from ..train import TrainingError

#: Subcommand modules under ``order_embedding.cli``, in the order ``--help`` lists them; each
#: defines ``register(subparsers)`` adding its parser(s) with ``set_defaults(func=...)``.
COMMANDS = [
    "demo",
    "prepare",
    "extract_features",
    "train",
    "evaluate",
    "encode",
    "convert_legacy",
    "index",
    "serve",
    "hypernym",
    "entailment",
]

DESCRIPTION = """\
Order-embeddings of images and language (Vendrov et al., ICLR 2016): train and evaluate
caption-image retrieval models in which a caption lies below the images it describes,
and run the paper's WordNet hypernym and textual entailment experiments."""

EPILOG = """\
examples:
  order-embedding demo --quick                        # a small generated world, both models, under a minute
  order-embedding train --preset order --data data/coco --name order
  order-embedding evaluate runs/order
  order-embedding COMMAND --help                      # what one command does, with an example

documentation: README.md and docs/ in the source repository"""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"order-embedding: warning: {message}", file=sys.stderr)


def version() -> str:
    """The installed package's version, from its metadata."""
    try:
        return importlib.metadata.version("order-embedding")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = Parser(prog="order-embedding", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
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
