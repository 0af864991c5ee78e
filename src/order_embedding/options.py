"""Training options: each declared once (name, default, rule, one-line meaning) and parsed by that rule.

``order-embedding train --help``, the table in docs/training.md and ``trainer(**kwargs)`` all
read :data:`OPTIONS`. A value may be given as its Python type or as text (the
command line): ``parse_option("dim", "8")`` and ``parse_option("dim", 8)`` are both
8, while ``8.5``, ``"abc"`` or ``True`` are refused with one line naming the option.
The value rules are also used for the count-like options of the other commands
and for the arguments of the Python API.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch


class OptionError(ValueError):
    """A value that does not satisfy its option's rule; the message names the option."""


# ---------------------------------------------------------------- value rules

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_NULL = {"null", "none"}


def boolean(value: Any, name: str = "value") -> bool:
    """``True``/``False``, or the text true/false/1/0/yes/no (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OptionError(f"{name} must be true or false (or 1/0, yes/no), got {value!r}")


def integer(value: Any, name: str = "value", minimum: int | None = None, *, maximum: int | None = None,
            allow_text: bool = True) -> int:
    """A whole number (an ``int``, a NumPy integer, or its decimal text), at least ``minimum`` and at most
    ``maximum`` when given.

    The one whole-number rule of the package: options, configs and the arguments of the Python API.
    ``allow_text=False`` refuses the text form, for values that are never typed (JSON records, Python arguments).
    """
    if isinstance(value, str) and allow_text:
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise OptionError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OptionError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise OptionError(f"{name} must be a whole number at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise OptionError(f"{name} must be a whole number at most {maximum}, got {value}")
    return value


def positive_int(value: Any, name: str = "value", *, allow_text: bool = True) -> int:
    """A whole number >= 1 (counts: batch sizes, epochs, dimensions, k)."""
    return integer(value, name, 1, allow_text=allow_text)


def number(value: Any, name: str = "value", minimum: float | None = None, above: float | None = None) -> float:
    """A finite real number (``int``, ``float`` or its text), ``>= minimum`` or ``> above`` when given."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OptionError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise OptionError(f"{name} must be a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise OptionError(f"{name} must be at least {minimum}, got {value}")
    if above is not None and value <= above:
        raise OptionError(f"{name} must be greater than {above}, got {value}")
    return value


def text(value: Any, name: str = "value") -> str:
    """A non-empty string (or path)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise OptionError(f"{name} must be a non-empty text, got {value!r}")
    return value


def plain_name(value: Any, name: str = "value") -> str:
    """A file or folder name, not a path: no separator, not ``.`` or ``..``."""
    value = text(value, name)
    if "/" in value or "\\" in value or value in (".", "..") or value != value.strip():
        raise OptionError(f"{name} must be a plain name (no '/', '\\', '.' or '..'), got {value!r}")
    return value


def json_object(value: Any, name: str = "value") -> dict[str, Any]:
    """A dict, or the text of a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise OptionError(f"{name} must be a JSON object such as '{{\"image_size\": 64}}', got {value!r}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise OptionError(f"{name} must be a JSON object, got {value!r}")
    return dict(value)


def device(value: Any, name: str = "device") -> str:
    """A torch device present on this machine (``cpu``, ``cuda``, ``cuda:N`` below the device count, ``mps``)."""
    value = text(str(value) if isinstance(value, torch.device) else value, name)
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise OptionError(f"{name} {value!r} is not a torch device (cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise OptionError(f"{name} {value!r} does not exist here ({count} CUDA device(s))")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise OptionError(f"{name} {value!r} does not exist here (no MPS device)")
    elif dev.type != "cpu":
        raise OptionError(f"{name} {value!r} is not supported (cpu, cuda, cuda:N, mps)")
    return value


def optional(rule: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``rule``, or ``None`` (also the text null/none)."""
    def parse(value: Any, name: str = "value") -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULL):
            return None
        return rule(value, name)

    return parse


def choice(*choices: str) -> Callable[[Any, str], str]:
    """One of the given words (listed as the parser's ``choices``, which ``--help`` shows)."""
    def parse(value: Any, name: str = "value") -> str:
        if value not in choices:
            raise OptionError(f"{name} {value!r} is not supported (only {' or '.join(repr(c) for c in choices)})")
        return value

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def at_least(minimum: int) -> Callable[[Any, str], int]:
    """A whole number >= ``minimum``."""
    def parse(value: Any, name: str = "value") -> int:
        return integer(value, name, minimum)

    return parse


#: The largest seed: 32 bits, which every seeding function takes (torch.manual_seed stops at 2**64 - 1, NumPy's
#: RandomState at 2**32 - 1) and which a JSON reader keeps exact.
MAX_SEED = 2**32 - 1


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: a whole number from 0 to :data:`MAX_SEED`."""
    return integer(value, name, 0, maximum=MAX_SEED)


def positive_number(value: Any, name: str = "value") -> float:
    """A finite number > 0."""
    return number(value, name, above=0.0)


def non_negative_number(value: Any, name: str = "value") -> float:
    """A finite number >= 0."""
    return number(value, name, minimum=0.0)


# ---------------------------------------------------------------- the training options


@dataclass(frozen=True)
class Option:
    """One option of a command: its default, the rule its values follow, and what it means."""

    name: str
    default: Any
    rule: Callable[[Any, str], Any]
    help: str
    #: Whether a resumed run may use another value (recorded in config.json); others must match.
    resumable: bool = False
    #: Earlier spellings of the flag, still accepted with a deprecation notice.
    aliases: tuple[str, ...] = ()
    #: The value's name in ``--help`` (a tuple names each of several values).
    metavar: str | tuple[str, ...] = "VALUE"
    #: Values taken by the flag (``None``: one).
    nargs: int | None = None

    @property
    def flags(self) -> list[str]:
        """``--name``, and its kebab-case spelling when that differs (``--max-epochs``, ``--valid-freq``)."""
        kebab = re.sub(r"([a-z])([A-Z])", r"\1-\2", self.name).lower().replace("_", "-")
        return [f"--{self.name}"] + ([f"--{kebab}"] if kebab != self.name else [])

    def parse(self, value: Any) -> Any:
        """``value`` checked and converted by the option's rule (:class:`OptionError` naming the option)."""
        return self.rule(value, self.name)


OPTIONS: tuple[Option, ...] = (
    Option("name", "anon", plain_name, "run folder name under save_dir (a name, not a path)", True),
    Option("save_dir", "runs", text, "folder holding the run folders", True),
    Option("load_from", None, optional(text), "initialise the weights from this run folder or original snapshot", True),
    Option("data", "coco", text, "data folder, Karpathy JSON, or a name under $ORDER_EMBEDDING_DATA", True),
    Option("cnn", "10crop", plain_name, "feature folder under the data's images/"),
    Option("dim_image", 4096, positive_int, "width of the image features (a pixel backbone's output width)"),
    Option("dim", 1024, positive_int, "width of the joint embedding space (the GRU state)"),
    Option("dim_word", 300, positive_int, "width of the word embeddings"),
    Option("encoder", "gru", choice("gru"), "sentence encoder"),
    Option("method", "order", choice("order", "cosine"), "measure: order-violation penalty, or cosine (symmetric)"),
    Option("margin", 0.05, non_negative_number, "contrastive margin"),
    Option("abs", True, boolean, "absolute value of the embeddings after normalising"),
    Option("max_epochs", 100, positive_int, "epochs to train", True),
    Option("dispFreq", 10, positive_int, "log the training loss every this many updates", True),
    Option("validFreq", 300, positive_int, "validate (and keep the best parameters) every this many updates"),
    Option("grad_clip", 2.0, positive_number, "gradients rescaled to this L2 norm at most (per tensor, or globally)"),
    Option("clip_mode", "tensor", choice("tensor", "global"), "clip each gradient tensor (the original), or one global norm"),
    Option("optimizer", "adam_original", choice("adam", "adam_original"),
           "Adam: textbook PyTorch 'adam', or the original driver's 'adam_original' rule"),
    Option("lr_update", None, optional(positive_int), "divide the learning rate by 10 every this many epochs (null: never)"),
    Option("batch_size", 128, at_least(2), "images per update, one random caption each (at least 2)"),
    Option("lrate", 0.001, positive_number, "learning rate (Adam: beta 0.9, 0.999, eps 1e-8)"),
    Option("max_violation", False, boolean, "hardest negative only (VSE++) instead of the sum over negatives"),
    Option("true_matches", False, boolean, "every batch image a caption is known to describe is a positive, never a "
           "negative (needs the data's train_matches.npy)"),
    Option("n_words", None, optional(at_least(2)), "vocabulary cap, the two special ids included (null: every word)"),
    Option("lowercase", False, boolean, "lowercase captions before the vocabulary"),
    Option("backbone", None, optional(plain_name), "learn from pixels through this backbone (small_cnn, resnet152 ...)"),
    Option("backbone_options", {}, json_object, "JSON options of the backbone, e.g. {\"image_size\": 64}"),
    Option("backbone_lrate", None, optional(positive_number), "learning rate of a trained backbone (null: lrate)"),
    Option("image_root", None, optional(text), "folder the data's image files are relative to (null: the data folder)", True),
    Option("valid_split", "dev", plain_name, "split validated during training"),
    Option("seed", 1234, seed, "seed of the initialisation and the batch order"),
    Option("device", None, optional(device), "torch device (null: CUDA when present)", True),
    Option("resume", False, boolean, "continue save_dir/name from its last checkpoint (same result as one uninterrupted run)", True),
    Option("verbose", True, boolean, "progress bar and log lines", True),
)

#: Each option by name.
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}

#: Options of every command besides the training hyperparameters.
QUIET = Option("quiet", False, boolean, "no progress bars or log lines")
THREADS = Option("threads", 1, positive_int, "CPU threads of torch and the order kernels (1: updates are small, and one thread stays fast "
                 "when the cores are shared)")
JSON = Option("json", None, optional(text), "also write the results as JSON to this file", metavar="PATH")
TENSORBOARD = Option("tensorboard", None, optional(text), "also write the metrics as TensorBoard scalars to this "
                     "folder (needs the tensorboard package)", True, metavar="DIR")
NO_SYMMETRIC = Option("no_symmetric", False, boolean, "train only the order model, not the symmetric (cosine) one")


def shared(name: str, default: Any = None, help: str | None = None, **changes: Any) -> Option:
    """A training option of :data:`OPTIONS` as another command declares it: the same flag and rule, with that
    command's default (and meaning, when it says more)."""
    base = BY_NAME[name]
    return replace(base, default=base.default if default is None else default, help=help or base.help, **changes)


#: ``--resume`` of the experiments that train several models into one run folder.
RESUME_RUN = shared("resume", help="continue save_dir/name from its last checkpoints (same result as one uninterrupted run)")

#: The defaults: the original driver's (reference section 3) plus this project's options.
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS}
#: The paper's two models (reference section 3).
PRESETS: dict[str, dict[str, Any]] = {
    "order": {"method": "order", "margin": 0.05, "abs": True, "optimizer": "adam_original", "lr_update": None},
    "symmetric": {"method": "cosine", "margin": 0.2, "abs": False, "optimizer": "adam_original", "lr_update": None},
}
#: Options a run does not record in its config.json.
NOT_RECORDED = ("verbose", "device", "resume")


def parse_option(name: str, value: Any) -> Any:
    """One option's value checked by its rule; an unknown name raises :class:`OptionError`."""
    if name not in BY_NAME:
        raise OptionError(f"unknown hyperparameter(s): {name}")
    return BY_NAME[name].parse(value)


def make_options(preset: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Defaults, then a preset, then explicit options, each checked by its rule; unknown names raise ``ValueError``."""
    if preset is not None and preset not in PRESETS:
        raise OptionError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(kwargs) - set(BY_NAME))
    if unknown:
        raise OptionError(f"unknown hyperparameter(s): {', '.join(unknown)}")
    merged = {**DEFAULTS, **(PRESETS[preset] if preset else {}), **kwargs}
    return {name: BY_NAME[name].parse(value) for name, value in merged.items()}


#: What a run folder written before an option existed was trained with (runs then did not record it).
BEFORE_RECORDED: dict[str, Any] = {"optimizer": "adam", "lr_update": None}


def changed_on_resume(recorded: dict[str, Any], options: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(name, recorded, given)`` for each option that defines a run's result and differs from what the run
    recorded. Options an older run did not record are compared with :data:`BEFORE_RECORDED`, or not at all."""
    changed = []
    for o in OPTIONS:
        if o.resumable or o.name in NOT_RECORDED or (o.name not in recorded and o.name not in BEFORE_RECORDED):
            continue
        was = recorded.get(o.name, BEFORE_RECORDED.get(o.name))
        if was != options[o.name]:
            changed.append((o.name, was, options[o.name]))
    return changed


def _shown(value: Any) -> str:
    return json.dumps(value)


def markdown_table() -> str:
    """The table of training options in docs/training.md: name, defaults of both presets, meaning."""
    rows = ["| option | order | symmetric | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        order = PRESETS["order"].get(o.name, o.default)
        symmetric = PRESETS["symmetric"].get(o.name, o.default)
        same = "same" if symmetric == order else f"`{_shown(symmetric)}`"
        resumable = " (may change on resume)" if o.resumable and o.name not in NOT_RECORDED + ("name", "save_dir") else ""
        rows.append(f"| `{o.name}` | `{_shown(order)}` | {same} | {o.help}{resumable} |")
    return "\n".join(rows)


def option_table(options: tuple[Option, ...]) -> str:
    """A Markdown table of a command's options (``hypernym``, ``entailment``): flag, default, meaning, and the
    earlier spellings still accepted."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for o in options:
        was = f" (was {', '.join(f'`--{a}`' for a in o.aliases)})" if o.aliases else ""
        rows.append(f"| `--{o.name}` | `{_shown(o.default)}` | {o.help}{was} |")
    return "\n".join(rows)
