"""The ``order-embedding`` command: one thin subcommand module per job."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

from ..runs import DiskFullError
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
