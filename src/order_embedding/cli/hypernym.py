"""``order-embedding hypernym``: WordNet hypernym completion, the order model against its baselines."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..hypernym import HypernymConfig, format_results, run_experiment, write_json
from ..hypernym.wordnet import (
    DEFAULT_WORDNET_DIR,
    build_dataset,
    find_wordnet_dir,
    read_wordnet,
)
from ..runs import check_output
from .help import parser_texts
from .threads import torch_threads
from .types import COUNT, COUNT0, NON_NEGATIVE, POSITIVE


def register(sub: argparse._SubParsersAction) -> None:
    d = HypernymConfig()
    p = sub.add_parser("hypernym", **parser_texts("hypernym"))
    p.add_argument("--wordnet", type=Path, default=Path(DEFAULT_WORDNET_DIR), metavar="DIR",
                   help=f"folder with data.noun and index.noun (default {DEFAULT_WORDNET_DIR}; NLTK's wordnet folder works)")
    p.add_argument("--root", metavar="SYNSET", help="use only this synset and those below it (e.g. mammal.n.01)")
    p.add_argument("--seed", type=COUNT0, default=0, help="seed of the split, negatives and initialisation (default 0)")
    p.add_argument("--dev-size", type=COUNT0, default=4000, help="dev edges (default 4000)")
    p.add_argument("--test-size", type=COUNT0, default=4000, help="test edges (default 4000)")
    p.add_argument("--epochs", type=COUNT, default=d.epochs, help=f"training epochs of each model (default {d.epochs})")
    p.add_argument("--dim", type=COUNT, default=d.dim, help=f"embedding dimension (default {d.dim})")
    p.add_argument("--batch-size", type=COUNT, default=d.batch_size, help=f"pairs per update (default {d.batch_size})")
    p.add_argument("--lr", type=POSITIVE, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--margin", type=NON_NEGATIVE, default=d.margin, help=f"hinge margin for negatives (default {d.margin})")
    p.add_argument("--negatives", type=COUNT, default=d.negatives,
                   help=f"negatives drawn per training edge each epoch (default {d.negatives})")
    p.add_argument("--filter-negatives", action="store_true",
                   help="draw a training negative again when it is a training edge (known to be true)")
    p.add_argument("--lr-decay", action="store_true", help="decay the learning rate linearly to 0 over the run")
    p.add_argument("--valid-every", type=COUNT, default=d.valid_every, metavar="N",
                   help=f"evaluate on dev every N updates and at each epoch's end (default {d.valid_every})")
    p.add_argument("--no-symmetric", action="store_true", help="skip the symmetric (cosine) model")
    p.add_argument("--out", type=Path, default=Path("runs/hypernym"), help="run folder to create (default runs/hypernym)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--threads", type=COUNT, default=1,
                   help="torch CPU threads (default 1: each update is small and memory-bound, and one thread "
                        "stays fast when the cores are shared)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    started = time.time()
    if args.json is not None:
        check_output(args.json, "--json", [args.wordnet], creates=[args.out])
    configs = [
        HypernymConfig(measure=m, dim=args.dim, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       margin=args.margin, negatives=args.negatives, filter_negatives=args.filter_negatives,
                       lr_decay=args.lr_decay, valid_every=args.valid_every, seed=args.seed)
        for m in (("order",) if args.no_symmetric else ("order", "symmetric"))
    ]
    wordnet_dir = find_wordnet_dir(args.wordnet)
    graph = read_wordnet(wordnet_dir)
    if args.root:
        graph = graph.descendants(args.root)
    data = build_dataset(graph, args.seed, dev_size=args.dev_size, test_size=args.test_size)
    source = {"wordnet": str(wordnet_dir.resolve()), "root": args.root}
    results = run_experiment(data, configs, run_dir=args.out, source=source, progress=not args.quiet, started=started)
    print(format_results(results))
    print(f"run folder: {args.out}")
    if args.json:
        write_json(results, args.json)
    return 0
