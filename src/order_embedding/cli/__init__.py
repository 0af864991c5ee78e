"""The ``order-embedding`` command: one thin subcommand module per job."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import signal
import sys
import threading
import warnings

from ..runs import DiskFullError
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


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as Ctrl-C (SIGINT) raises KeyboardInterrupt: the same
    clean-up runs (temporaries removed, run folders left resumable)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


#: Exit statuses (docs/errors.md has the table).
EXIT_OK, EXIT_SYSTEM, EXIT_INPUT = 0, 1, 2


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
    main_thread = threading.current_thread() is threading.main_thread()  # where handlers may be installed
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGHUP) if main_thread}
    with warnings.catch_warnings():  # warnings print as one line while the command runs
        warnings.showwarning = _print_warning
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
            name = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
            print(f"order-embedding {args.command}: interrupted{name}", file=sys.stderr)
            return 128 + signum
        except DiskFullError as e:  # the system could not write: not the input's fault
            print(f"order-embedding {args.command}: error: {e}", file=sys.stderr)
            return EXIT_SYSTEM
        except (CLIError, TrainingError, ValueError, FileNotFoundError, NotADirectoryError) as e:
            print(f"order-embedding {args.command}: error: {e}", file=sys.stderr)
            return EXIT_INPUT
        except OSError as e:  # an unreadable or unwritable file, a full disk
            where = f"{e.filename}: " if e.filename else ""
            print(f"order-embedding {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
            return EXIT_SYSTEM
        except RecursionError:  # every reader bounds nesting; this names the command if one was missed
            print(f"order-embedding {args.command}: error: input nested too deeply to process", file=sys.stderr)
            return EXIT_INPUT
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
