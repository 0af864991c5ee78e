"""``order-embedding entailment``: textual entailment, the order model against its baselines."""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from ..entailment import (
    CorpusConfig,
    EntailmentConfig,
    format_results,
    generate_corpus,
    read_snli,
    run_experiment,
    write_corpus,
    write_json,
)
from ..entailment.experiment import check_new_run, prepare_run_dir
from ..inference import default_device
from ..runs import check_output
from .help import parser_texts
from .threads import torch_threads
from .types import COUNT, DEVICE, NAME

#: Hyperparameters that differ on the generated corpus (a small grammar: a small, fast model learns it),
#: and with ``--quick``; every other default is reference section 9's, as for SNLI.
GENERATED = {"dim": 128, "dim_word": 64, "max_epochs": 9}
QUICK = {"dim": 64, "dim_word": 32, "lrate": 0.003, "max_epochs": 8}
QUICK_SCENES = CorpusConfig(train=1200, dev=200, test=200)

HELP = {
    "dim": "sentence-vector (GRU state) size",
    "dim_word": "word-vector size",
    "margin": "hinge margin for pairs that are not entailed",
    "max_epochs": "passes over the training pairs",
    "batch_size": "pairs per update (the last partial batch of an epoch is dropped)",
    "lrate": "learning rate",
    "validFreq": "dev accuracy every this many updates (and after the last); the best parameters are kept",
    "dispFreq": "log the training loss every this many updates",
    "grad_clip": "rescale the gradients to this global L2 norm when above it (0: no clipping)",
    "optimizer": "adam_original (the original's Adam rule) or adam (textbook)",
    "n_words": "vocabulary size, rarer words become unknown",
    "seed": "seed of the initialisation and batch order",
}


def _default_text(name: str, default: object) -> str:
    if default is None:
        return "default: every train and dev word"
    text = f"default {default}"
    if name in GENERATED or name in QUICK:
        text += " (section 9)"
        if GENERATED.get(name, default) != default:
            text += f", {GENERATED[name]} on the generated corpus"
        if QUICK.get(name, default) != GENERATED.get(name, default):
            text += f", {QUICK[name]} with --quick"
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("entailment", **parser_texts("entailment"))
    p.add_argument("--snli", type=Path, metavar="DIR",
                   help="folder with snli_1.0_{train,dev,test}.jsonl or .txt, or the original's {train,dev,test}.txt")
    for split in ("train", "dev", "test"):
        p.add_argument(f"--{split}-file", type=Path, metavar="FILE", dest=f"{split}_file",
                       help=f"read the {split} split from this file instead (e.g. a MultiNLI .jsonl)")
    p.add_argument("--quick", action="store_true",
                   help=f"a small generated corpus ({QUICK_SCENES.train}/{QUICK_SCENES.dev}/{QUICK_SCENES.test} scenes) "
                        "and short training, under a minute")
    d = CorpusConfig()
    p.add_argument("--scenes", type=int, nargs=3, metavar=("TRAIN", "DEV", "TEST"),
                   help=f"scenes of the generated corpus per split (default {d.train} {d.dev} {d.test})")
    p.add_argument("--corpus-seed", type=int, default=0, help="seed of the generated corpus (default 0)")
    defaults = EntailmentConfig()
    for f in fields(EntailmentConfig):
        if f.name == "lowercase":
            continue
        value = getattr(defaults, f.name)
        kind = {"optimizer": str, "n_words": int}.get(f.name, type(value))
        p.add_argument(f"--{f.name}", type=kind, default=None, metavar="N" if kind is int else "X" if kind is float else "NAME",
                       choices=("adam_original", "adam") if f.name == "optimizer" else None,
                       help=f"{HELP[f.name]}; {_default_text(f.name, value)}")
    p.add_argument("--lowercase", action="store_true", help="lower-case every word (default: case kept, as the original)")
    p.add_argument("--save_dir", type=Path, default=Path("runs"), help="folder of run folders (default runs)")
    p.add_argument("--name", type=NAME, default="entailment", help="run folder name under --save_dir (default entailment)")
    p.add_argument("--no-symmetric", action="store_true", help="train only the order model")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--device", type=DEVICE, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=COUNT, default=1,
                   help="torch CPU threads (default 1: batches are small, and one thread stays fast on shared cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, generated: bool) -> EntailmentConfig:
    base = asdict(EntailmentConfig())
    base.update(QUICK if args.quick else GENERATED if generated else {})
    given = {k: getattr(args, k) for k in base if getattr(args, k, None) is not None}
    return EntailmentConfig(**{**base, **given, "lowercase": args.lowercase})


def run(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    started = time.time()
    files = {"train": args.train_file, "dev": args.dev_file, "test": args.test_file}
    generated = args.snli is None and not any(files.values())
    if not generated and (args.quick or args.scenes):
        raise ValueError("--quick and --scenes are for the generated corpus; drop them with --snli or --*-file")
    config = _config(args, generated)
    scenes = dict(zip(("train", "dev", "test"), args.scenes)) if args.scenes else {}
    corpus = CorpusConfig(**scenes, seed=args.corpus_seed) if not args.quick else \
        CorpusConfig(QUICK_SCENES.train, QUICK_SCENES.dev, QUICK_SCENES.test, seed=args.corpus_seed)
    device = torch.device(args.device) if args.device else default_device()
    run_dir = args.save_dir / args.name
    if args.json is not None:
        check_output(args.json, "--json", [args.snli, *files.values()], creates=[run_dir])
    variants = ("order",) if args.no_symmetric else ("order", "symmetric")
    check_new_run(run_dir)
    if generated:
        records = generate_corpus(corpus)
        prepare_run_dir(run_dir)
        data = read_snli(write_corpus(records, run_dir / "corpus"))
        source = f"generated (seed {corpus.seed}; {corpus.train}/{corpus.dev}/{corpus.test} scenes)"
    else:
        data = read_snli(args.snli, files)  # every file is read and checked before the run folder is made
        prepare_run_dir(run_dir)
        source = str(args.snli.resolve()) if args.snli else "files"
    results = run_experiment(data, config, run_dir, source, variants=variants, device=device,
                             progress=not args.quiet, started=started)
    print(format_results(results))
    print(f"run folder: {run_dir}")
    if args.json:
        write_json(results, args.json)
    return 0
