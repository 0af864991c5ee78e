"""``order-embedding hypernym``: WordNet hypernym completion, the order model against its baselines."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..hypernym import HypernymConfig, format_results, run_experiment, write_json
from ..hypernym.experiment import OPTIONS
from ..hypernym.wordnet import build_dataset, find_wordnet_dir, read_wordnet
from ..runs import check_output
from .help import parser_texts
from .threads import torch_threads
from .types import add_options, with_defaults

#: The options that make up :class:`HypernymConfig`, besides the measure.
CONFIG = ("dim", "max_epochs", "batch_size", "lrate", "margin", "negatives", "filter_negatives",
          "reversed_negatives", "lr_decay",
          "validFreq", "seed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hypernym", **parser_texts("hypernym"))
    add_options(p, OPTIONS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)  # deprecated: save_dir and name as one path
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opt = with_defaults(args, OPTIONS)
    if args.out is not None:
        print("order-embedding: warning: --out is deprecated; use --save_dir and --name", file=sys.stderr)
        opt["save_dir"], opt["name"] = str(args.out.parent), args.out.name
    with torch_threads(opt["threads"]):
        return _run(opt)


def _run(opt: dict[str, Any]) -> int:
    started = time.time()
    configs = [HypernymConfig(measure=m, **{k: opt[k] for k in CONFIG})
               for m in (("order",) if opt["no_symmetric"] else ("order", "cosine"))]
    run_dir = Path(opt["save_dir"]) / opt["name"]
    if opt["json"] is not None:
        check_output(opt["json"], "--json", [Path(opt["wordnet"])], creates=[run_dir])
    wordnet_dir = find_wordnet_dir(Path(opt["wordnet"]))
    graph = read_wordnet(wordnet_dir)
    if opt["root"]:
        graph = graph.descendants(opt["root"])
    data = build_dataset(graph, opt["seed"], dev_size=opt["dev_size"], test_size=opt["test_size"])
    source = {"wordnet": str(wordnet_dir.resolve()), "root": opt["root"]}
    results = run_experiment(data, configs, run_dir=run_dir, source=source, progress=not opt["quiet"],
                             started=started, resume=opt["resume"], tensorboard=opt["tensorboard"])
    print(format_results(results))
    print(f"run folder: {run_dir}")
    if opt["json"]:
        write_json(results, opt["json"])
    return 0
