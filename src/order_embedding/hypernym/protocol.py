"""What the evaluation protocols of the hypernym experiment share: the ``--protocol`` and ``--percent``
options, the measure of a config, and saving the tables.

``vendrov`` is the paper's split (:mod:`.experiment`); ``ganea`` the split of Ganea et al., "Hyperbolic
Entailment Cones" (ICML 2018), scored by F1 (:mod:`.ganea`); ``reconstruction`` the mean rank and MAP of
the whole closure of Nickel and Kiela, "Poincaré Embeddings" (NIPS 2017) (:mod:`.reconstruction`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import options, runs
from ..measures import MODELS
from .experiment import BY_NAME, HypernymConfig
from .wordnet import GANEA_PERCENTS

#: The protocols, the paper's first.
PROTOCOLS = ("vendrov", "ganea", "reconstruction")


def percent(value: Any, name: str = "percent") -> int:
    """One of Ganea et al.'s training percentages (:data:`GANEA_PERCENTS`)."""
    v = options.integer(value, name)
    if v not in GANEA_PERCENTS:
        raise options.OptionError(f"{name} {v} is not supported (only {', '.join(map(str, GANEA_PERCENTS))})")
    return v


percent.choices = GANEA_PERCENTS  # type: ignore[attr-defined]

#: The options that choose the protocol (declared beside the experiment's own, see :data:`.experiment.OPTIONS`).
OPTIONS: tuple[options.Option, ...] = (
    options.Option("protocol", "vendrov", options.choice(*PROTOCOLS), "evaluation: the paper's split (vendrov), "
                   "Ganea et al.'s basic edges plus a percentage of the others, scored by F1 (ganea), or mean "
                   "rank and MAP of the whole closure (reconstruction)"),
    options.Option("percent", None, options.optional(percent), "ganea: percent of the non-basic closure edges "
                   "added to the basic ones for training (needed with --protocol ganea)", metavar="P"),
)


def check_protocol(opt: dict[str, Any]) -> None:
    """Refuse option combinations a protocol does not use (:class:`options.OptionError`, one line)."""
    protocol = opt["protocol"]
    if protocol == "ganea" and opt["percent"] is None:
        raise options.OptionError(f"--protocol ganea needs --percent ({' or '.join(map(str, GANEA_PERCENTS))})")
    if protocol != "ganea" and opt["percent"] is not None:
        raise options.OptionError(f"--percent applies only to --protocol ganea (not {protocol})")
    if protocol != "vendrov":
        for name in ("dev_size", "test_size"):
            if opt.get(name) != BY_NAME[name].default:
                raise options.OptionError(f"--{name.replace('_', '-')} applies only to --protocol vendrov "
                                          f"({protocol} fixes its own held-out edges)")


def method_of(config: HypernymConfig) -> str:
    """The measure (``order`` or ``cosine``) of a config, read through its model's name."""
    return MODELS[config.model]


def save_tables(run_dir: Path, tables: dict[str, np.ndarray], thresholds: dict[str, float],
                scores: dict[str, float]) -> None:
    """Write each model's kept embeddings to ``model.safetensors``, thresholds and validation scores in the metadata."""
    runs.save_tensors(run_dir / runs.BEST, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tables.items()},
                      {"thresholds": thresholds, "valid_score": scores})
