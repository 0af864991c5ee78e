"""Argparse types made from the value rules of :mod:`order_embedding.options`."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..options import (
    Option,
    OptionError,
    boolean,
    device,
    integer,
    non_negative_number,
    plain_name,
    positive_int,
    positive_number,
    seed,
)

Rule = Callable[[Any, str], Any]


def flag(rule: Rule, name: str = "value") -> Callable[[str], Any]:
    """An argparse ``type=`` applying ``rule``; argparse prefixes its one-line error with the flag."""
    def parse(value: str) -> Any:
        try:
            return rule(value, name)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{name} ").strip()) from None

    parse.__name__ = getattr(rule, "__name__", "value")
    return parse


#: ``type=`` for counts (batch sizes, k, epochs, dimensions, threads).
COUNT = flag(positive_int)
#: ``type=`` for counts that may be 0 (worker processes, held-out sizes).
COUNT0 = flag(lambda v, n: integer(v, n, 0))
#: ``type=`` for a random seed (0 to 2**32 - 1).
SEED = flag(seed)
#: ``type=`` for a positive finite number (learning rates).
POSITIVE = flag(positive_number)
#: ``type=`` for a finite number >= 0 (margins).
NON_NEGATIVE = flag(non_negative_number)
#: ``type=`` for a torch device that exists here.
DEVICE = flag(device, "device")
#: ``type=`` for a file or folder name that must not be a path.
NAME = flag(plain_name, "name")


def output_path(value: str) -> Path:
    """``type=`` for a file or folder a command writes: any non-empty path (``''`` would mean the working folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path; give the file or folder to write")
    return Path(value)


class _Deprecated(argparse.Action):
    """An earlier spelling of a flag: stores the value under the new one and says so on stderr, once."""

    def __init__(self, option_strings: list[str], dest: str, instead: str = "", **kwargs: Any) -> None:
        self.instead = instead
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"order-embedding: warning: {option_string} is deprecated; use {self.instead}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option],
                default_text: Callable[[Option], str] | None = None) -> None:
    """One flag per option (``--name`` and its kebab-case spelling), parsed by the option's rule, its fixed
    values as ``choices``; earlier spellings are kept as hidden flags with a deprecation notice. A boolean flag
    alone means true (``--resume``) and also takes a value (``--resume false``). Options not given are absent
    from the parsed namespace (see :func:`given`)."""
    for o in options:
        kwargs: dict[str, Any] = {"dest": o.name, "default": argparse.SUPPRESS, "type": flag(o.rule, o.name)}
        if o.rule is boolean:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        else:
            kwargs.update(metavar=o.metavar, nargs=o.nargs)
            choices = getattr(o.rule, "choices", None)
            if choices is not None:
                kwargs.update(choices=choices, metavar=None)
        shown = default_text(o) if default_text else f"default: {json.dumps(o.default)}"
        parser.add_argument(*o.flags, help=f"{o.help} ({shown})", **kwargs)
        for alias in o.aliases:
            parser.add_argument(f"--{alias}", action=_Deprecated, instead=o.flags[0], help=argparse.SUPPRESS,
                                **{k: v for k, v in kwargs.items() if k != "metavar"})


def given(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """The options given on the command line, by name."""
    names = {o.name for o in options}
    return {k: v for k, v in vars(args).items() if k in names}


def with_defaults(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """Every option's value: given, or its default."""
    return {**{o.name: o.default for o in options}, **given(args, options)}
