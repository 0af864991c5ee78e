"""``order-embedding entailment``: textual entailment, the order model against its baselines."""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

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
from ..entailment.experiment import OPTIONS, check_new_run, prepare_run_dir
from ..inference import default_device
from ..options import Option
from ..runs import check_output
from .help import parser_texts
from .threads import cpu_threads
from .types import add_options, given, with_defaults

#: Hyperparameters that differ on the generated corpus (a small grammar: a small, fast model learns it),
#: and with ``--quick``; every other default is reference section 9's, as for SNLI.
GENERATED = {"dim": 128, "dim_word": 64, "max_epochs": 9}
QUICK = {"dim": 64, "dim_word": 32, "lrate": 0.003, "max_epochs": 8}
QUICK_SCENES = CorpusConfig(train=1200, dev=200, test=200)


def _default_text(o: Option) -> str:
    if o.name == "n_words":
        return "default: every train and dev word"
    if o.name == "scenes":
        d = CorpusConfig()
        return f"default {d.train} {d.dev} {d.test}"
    if o.name == "lowercase":
        return "default: false, case kept as the original"
    text = f"default {o.default}"
    if o.name in GENERATED or o.name in QUICK:
        text += " (section 9)"
        if GENERATED.get(o.name, o.default) != o.default:
            text += f", {GENERATED[o.name]} on the generated corpus"
        if QUICK.get(o.name, o.default) != GENERATED.get(o.name, o.default):
            text += f", {QUICK[o.name]} with --quick"
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("entailment", **parser_texts("entailment"))
    add_options(p, OPTIONS, _default_text)
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, generated: bool, quick: bool) -> EntailmentConfig:
    names = {f.name for f in fields(EntailmentConfig)}
    base = {o.name: o.default for o in OPTIONS if o.name in names}
    base.update(QUICK if quick else GENERATED if generated else {})
    return EntailmentConfig(**{**base, **{k: v for k, v in given(args, OPTIONS).items() if k in names}})


def run(args: argparse.Namespace) -> int:
    with cpu_threads(with_defaults(args, OPTIONS)["threads"]):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    started = time.time()
    opt: dict[str, Any] = with_defaults(args, OPTIONS)
    files = {split: opt[f"{split}_file"] for split in ("train", "dev", "test")}
    generated = opt["snli"] is None and not any(files.values())
    if not generated and (opt["quick"] or opt["scenes"]):
        raise ValueError("--quick and --scenes are for the generated corpus; drop them with --snli or --*-file")
    config = _config(args, generated, opt["quick"])
    d = CorpusConfig()
    n_train, n_dev, n_test = (QUICK_SCENES.train, QUICK_SCENES.dev, QUICK_SCENES.test) if opt["quick"] else \
        opt["scenes"] or (d.train, d.dev, d.test)
    corpus = CorpusConfig(train=n_train, dev=n_dev, test=n_test, seed=opt["corpus_seed"])
    device = torch.device(opt["device"]) if opt["device"] else default_device()
    run_dir = Path(opt["save_dir"]) / opt["name"]
    if opt["json"] is not None:
        check_output(opt["json"], "--json", [opt["snli"], *files.values()], creates=[run_dir])
    variants = ("order",) if opt["no_symmetric"] else ("order", "symmetric")
    check_new_run(run_dir, opt["resume"])
    if generated:
        records = generate_corpus(corpus)
        prepare_run_dir(run_dir, opt["resume"])
        data = read_snli(write_corpus(records, run_dir / "corpus"))
        source = f"generated (seed {corpus.seed}; {corpus.train}/{corpus.dev}/{corpus.test} scenes)"
    else:
        snli = Path(opt["snli"]) if opt["snli"] else None
        paths: dict[str, str | os.PathLike] = {k: Path(v) for k, v in files.items() if v}
        data = read_snli(snli, paths)  # every file is read and checked before the run folder is made
        prepare_run_dir(run_dir, opt["resume"])
        source = str(snli.resolve()) if snli else "files"
    results = run_experiment(data, config, run_dir, source, variants=variants, device=device,
                             progress=not opt["quiet"], started=started, resume=opt["resume"],
                             tensorboard=opt["tensorboard"])
    print(format_results(results))
    print(f"run folder: {run_dir}")
    if opt["json"]:
        write_json(results, opt["json"])
    return 0
