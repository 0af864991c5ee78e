"""``order-embedding train``: the original driver's hyperparameters as flags."""
from __future__ import annotations

import argparse
import json
import os

from ..train import DEFAULTS, PRESETS, trainer


def _parse_value(text: str):
    """A flag value as JSON when it parses (numbers, booleans, null, objects), else as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a caption-image model",
                       description="Train with the original's hyperparameter names; values parse as JSON when they can.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="order", help="the paper's order or symmetric model")
    for key, value in DEFAULTS.items():
        if key in ("verbose",):
            continue
        p.add_argument(f"--{key}", dest=key, type=_parse_value, default=argparse.SUPPRESS,
                       metavar="VALUE", help=f"default: {json.dumps(value)}")
    p.add_argument("--finetune", action="store_true",
                   help="train the torchvision backbone's weights too (default: frozen); needs --backbone")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k in DEFAULTS}
    if args.finetune:
        if not options.get("backbone"):
            raise ValueError("--finetune needs a backbone (for example --backbone resnet152 --dim_image 2048)")
        options["backbone_options"] = {**(options.get("backbone_options") or {}), "finetune": True}
    run_dir = trainer(args.preset, verbose=not args.quiet, **options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only the first process prints
        print(run_dir)
    return 0
