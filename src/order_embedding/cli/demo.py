"""``order-embedding demo``: the whole pipeline on the generated shapes world, no download."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import FULL, QUICK, format_demo, run_demo, write_json
from .help import parser_texts
from .threads import cpu_threads, idle_cores, thread_count
from .types import SEED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", **parser_texts("demo"))
    p.add_argument("--out", type=Path, help=f"folder for data and runs (default: ./{FULL.out}, "
                                            f"or ./{QUICK.out} with --quick)")
    p.add_argument("--quick", action="store_true",
                   help=f"a small version ({QUICK.n_train:,} training images, {QUICK.max_epochs} epochs per model) "
                        "that finishes in about a minute on two idle cores")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the generated world and the training (default: 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a world and models in the folder that were made with other settings")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--threads", type=thread_count, default="auto", metavar="N|auto",
                   help="CPU threads (torch's and the order kernels'); auto (the default): the cores not busy with other work when the demo "
                        "starts (measured over one second), at least 1")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    threads = idle_cores() if args.threads == "auto" else args.threads
    with cpu_threads(threads):
        results = run_demo(args.out, scale=QUICK if args.quick else FULL, seed=args.seed, verbose=not args.quiet,
                           overwrite=args.overwrite)
    print(format_demo(results))
    if args.json:
        write_json(results, args.json)
    return 0
