"""``order-embedding train``: the original driver's hyperparameters as flags, one per declared option."""
from __future__ import annotations

import argparse
import json
import os

from ..options import OPTIONS, PRESETS, QUIET, TENSORBOARD, Option
from ..train import trainer
from .help import parser_texts
from .types import add_options, given, with_defaults


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", **parser_texts("train"))
    p.add_argument("--preset", choices=sorted(PRESETS), default="order", help="the paper's order or symmetric model")
    add_options(p, [o for o in OPTIONS if o.name != "verbose"], _default_text)
    p.add_argument("--finetune", action="store_true",
                   help="train the torchvision backbone's weights too (default: frozen); needs --backbone")
    add_options(p, [TENSORBOARD, QUIET])
    p.set_defaults(func=run)


def _default_text(option: Option) -> str:
    return f"default: {json.dumps(PRESETS['order'].get(option.name, option.default))}"


def run(args: argparse.Namespace) -> int:
    options = given(args, OPTIONS)
    extra = with_defaults(args, [TENSORBOARD, QUIET])
    if args.finetune:
        if not options.get("backbone"):
            raise ValueError("--finetune needs a backbone (for example --backbone resnet152 --dim_image 2048)")
        options["backbone_options"] = {**(options.get("backbone_options") or {}), "finetune": True}
    run_dir = trainer(args.preset, verbose=not extra["quiet"], tensorboard=extra["tensorboard"], **options)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, only the first process prints
        print(run_dir)
    return 0
