"""``order-embedding train``: the original driver's hyperparameters as flags, one per declared option."""
from __future__ import annotations

import argparse
import json
import os

from ..options import OPTIONS, PRESETS
from ..train import trainer
from .help import parser_texts
from .types import flag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", **parser_texts("train"))
    p.add_argument("--preset", choices=sorted(PRESETS), default="order", help="the paper's order or symmetric model")
    for option in OPTIONS:
        if option.name == "verbose":
            continue
        default = PRESETS["order"].get(option.name, option.default)
        p.add_argument(f"--{option.name}", dest=option.name, type=flag(option.rule, option.name), default=argparse.SUPPRESS,
                       metavar="VALUE", help=f"{option.help} (default: {json.dumps(default)})")
    p.add_argument("--finetune", action="store_true",
                   help="train the torchvision backbone's weights too (default: frozen); needs --backbone")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = {o.name for o in OPTIONS}
    options = {k: v for k, v in vars(args).items() if k in names}
    if args.finetune:
        if not options.get("backbone"):
            raise ValueError("--finetune needs a backbone (for example --backbone resnet152 --dim_image 2048)")
        options["backbone_options"] = {**(options.get("backbone_options") or {}), "finetune": True}
    run_dir = trainer(args.preset, verbose=not args.quiet, **options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only the first process prints
        print(run_dir)
    return 0
