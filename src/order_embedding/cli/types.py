"""Argparse types made from the value rules of :mod:`order_embedding.options`."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..options import OptionError, device, integer, non_negative_number, plain_name, positive_int, positive_number

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
