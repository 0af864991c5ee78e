"""``order-embedding hypernym``: WordNet hypernym completion, the order model against its baselines."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..hypernym import HypernymConfig, format_results, run_experiment, write_json
from ..hypernym.experiment import OPTIONS
from ..hypernym.ganea import format_ganea, run_ganea
from ..hypernym.protocol import OPTIONS as PROTOCOL_OPTIONS
from ..hypernym.protocol import check_protocol
from ..hypernym.reconstruction import format_reconstruction, reconstruction_data, run_reconstruction
from ..hypernym.wordnet import build_dataset, find_wordnet_dir, ganea_split, read_wordnet, without_root
from ..runs import check_output
from .help import parser_texts
from .threads import cpu_threads
from .types import add_options, with_defaults

#: The options that make up :class:`HypernymConfig`, besides the measure (``method``).
CONFIG = ("dim", "max_epochs", "batch_size", "lrate", "margin", "negatives", "filter_negatives",
          "reversed_negatives", "lr_decay", "training",
          "validFreq", "seed")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hypernym", **parser_texts("hypernym"))
    add_options(p, OPTIONS)
    add_options(p, PROTOCOL_OPTIONS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)  # deprecated: save_dir and name as one path
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opt = with_defaults(args, OPTIONS + PROTOCOL_OPTIONS)
    check_protocol(opt)
    if args.out is not None:
        print("order-embedding: warning: --out is deprecated; use --save_dir and --name", file=sys.stderr)
        opt["save_dir"], opt["name"] = str(args.out.parent), args.out.name
    with cpu_threads(opt["threads"]):
        return _run(opt)


def _run(opt: dict[str, Any]) -> int:
    started = time.time()
    configs = [HypernymConfig(method=m, **{k: opt[k] for k in CONFIG})
               for m in (("order",) if opt["no_symmetric"] else ("order", "cosine"))]
    run_dir = Path(opt["save_dir"]) / opt["name"]
    if opt["json"] is not None:
        check_output(opt["json"], "--json", [Path(opt["wordnet"])], creates=[run_dir])
    wordnet_dir = find_wordnet_dir(Path(opt["wordnet"]))
    graph = read_wordnet(wordnet_dir)
    if opt["protocol"] != "vendrov":
        return _run_protocol(opt, configs, graph, wordnet_dir, run_dir, started)
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


def _run_protocol(opt: dict[str, Any], configs: list[HypernymConfig], graph: Any, wordnet_dir: Path, run_dir: Path,
                  started: float) -> int:
    """``--protocol ganea`` or ``reconstruction`` on the read WordNet graph."""
    source = {"wordnet": str(wordnet_dir.resolve()), "root": opt["root"]}
    common = {"run_dir": run_dir, "source": source, "progress": not opt["quiet"], "started": started,
              "resume": opt["resume"], "tensorboard": opt["tensorboard"]}
    if opt["protocol"] == "ganea":
        split = ganea_split(without_root(graph, opt["root"]), opt["percent"], opt["seed"])
        results = run_ganea(split, configs, **common)
        print(format_ganea(results))
    else:
        if opt["root"]:
            graph = graph.descendants(opt["root"])
        results = run_reconstruction(reconstruction_data(graph, opt["seed"]), configs, **common)
        print(format_reconstruction(results))
    print(f"run folder: {run_dir}")
    if opt["json"]:
        write_json(results, opt["json"])
    return 0
