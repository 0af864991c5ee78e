"""``order-embedding evaluate``: the paper's retrieval table for one or more runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import runs
from ..evaluation import ranking_eval_5fold, retrieval_lists
from ..inference import encode_split, load_model, model_split
from ..report import model_label, results_table, rounded
from ..runs import atomic_write
from .help import parser_texts
from .types import DEVICE, NAME, output_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", **parser_texts("evaluate"))
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or an original snapshot prefix")
    p.add_argument("--data", help="dataset folder (default: the one the run was trained on)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument("--cnn", type=NAME, help="feature folder under images/ (default: the run's)")
    p.add_argument("--image-root", help="folder the split's image files are relative to")
    p.add_argument("--full", action="store_true", help="the whole split at once (COCO 5K) instead of 1,000-image folds")
    p.add_argument("--json", type=output_path, metavar="PATH", help="write the metrics as JSON")
    p.add_argument("--ranks-json", type=output_path, metavar="PATH",
                   help="write per-query ranks and top-10 lists of the first run (whole split) as JSON")
    p.add_argument("--device", type=DEVICE, help="torch device (default: cuda when present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = [*args.runs, args.data, args.image_root]
    for option, path in (("--json", args.json), ("--ranks-json", args.ranks_json)):
        if path is not None:
            runs.check_output(path, option, inputs)
    if args.json is not None and args.ranks_json is not None and args.json.resolve() == args.ranks_json.resolve():
        raise ValueError(f"--json and --ranks-json name the same file {args.json}")
    rows, out = {}, {}
    labels = run_labels(args.runs)  # for runs whose model labels coincide
    for i, path in enumerate(args.runs):
        model = load_model(path, device=args.device)
        result = ranking_eval_5fold(model, split=args.split, data=args.data, cnn=args.cnn,
                                    fold5=not args.full, image_root=args.image_root)
        name = model_label(model.config.method)
        if name in rows:
            name = labels[i] if labels[i] not in rows else str(Path(path).resolve())
        rows[name] = result
        out[name] = {"t2i": rounded(result["t2i"]), "i2t": rounded(result["i2t"]), "run_dir": str(path),
                     "folds": len(result["folds"])}
        if i == 0 and args.ranks_json:
            write_ranks(model, args, args.ranks_json)
    print(results_table(rows, f"split {args.split}" + (" (whole)" if args.full else " (1,000-image folds averaged)")))
    if args.json:
        atomic_write(args.json, json.dumps(out, indent=2).encode())
    return 0


def run_labels(paths: list[str]) -> list[str]:
    """A label for each run that tells it from the others: the shortest trailing part of its path that no other
    run shares (``a/order`` and ``b/order``), or the whole path and its position for a run given twice."""
    parts = [Path(p).resolve().parts for p in paths]
    labels = []
    for i, mine in enumerate(parts):
        for n in range(1, len(mine) + 1):
            if all(other[-n:] != mine[-n:] for j, other in enumerate(parts) if j != i):
                labels.append(str(Path(*mine[-n:])))
                break
        else:
            labels.append(f"{Path(*mine)} ({i + 1})")
    return labels


def write_ranks(model, args: argparse.Namespace, path: Path) -> None:
    """Per-query ranks and top-10 lists over the whole split, for browsing."""
    split = model_split(model, args.split, args.data, args.cnn, args.image_root)
    s, im = encode_split(model, split)
    lists = retrieval_lists(s, im, split.cap2img, model.config.method, k=10)
    doc = {"split": args.split, "method": model.config.method, "captions": split.captions,
           "cap2img": split.cap2img.tolist(), "image_files": split.image_files,
           **{d: {"ranks": v["ranks"].tolist(), "top10": v["top"].tolist(),
                  "top10_errors": v["errors"].round(6).tolist()} for d, v in lists.items()}}
    atomic_write(path, json.dumps(doc).encode())
