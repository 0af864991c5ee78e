"""``order-embedding index``: store image embeddings on disk and search them with sentences."""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .. import runs
from ..index import DTYPES, Index, build_ann, build_index
from ..inference import load_model, model_split, split_images
from ..vision.images import image_paths
from .encode import image_list, read_captions, report_unknown
from .help import parser_texts
from .types import COUNT, DEVICE, output_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", **parser_texts("index"))
    isub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    b = isub.add_parser("build", **parser_texts("index build"))
    b.add_argument("run", metavar="RUN", help="run folder (or original snapshot prefix) whose model embeds the images")
    b.add_argument("features", type=Path, nargs="?", metavar="FEATURES", help=".npy of CNN features, one row per image")
    b.add_argument("--images", type=Path, metavar="TXT",
                   help="instead of FEATURES, image files (one path per line) for a model trained from pixels")
    b.add_argument("--image-root", type=Path, metavar="DIR", help="folder the --images paths are relative to "
                   "(default: the list's folder)")
    b.add_argument("--split", metavar="NAME", help="instead of FEATURES, the images of a data split (features or "
                   "files, whichever the model reads), e.g. test")
    b.add_argument("--data", metavar="DATA_DIR", help="data set of --split (default: the one the run trained on)")
    b.add_argument("--out", type=output_path, required=True, metavar="INDEX", help="index folder to create")
    b.add_argument("--dtype", choices=DTYPES, default="float16", help="stored precision (default: float16)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index folder (never a folder of another kind)")
    b.add_argument("--ann", choices=("ivf", "hnsw"), help="also build a FAISS candidate index for approximate search")
    b.add_argument("--nlist", type=COUNT, help="IVF lists (default: about 4 sqrt(images))")
    b.add_argument("--device", type=DEVICE, help="torch device for encoding (default: cpu)")
    b.set_defaults(func=run_build)

    s = isub.add_parser("search", **parser_texts("index search"))
    s.add_argument("index", type=Path, metavar="INDEX", help="index folder")
    s.add_argument("sentences", nargs="*", metavar="SENTENCE", help="query sentences (pre-tokenised text)")
    s.add_argument("--queries", type=Path, metavar="TXT", help="also read queries from a file, one per line")
    s.add_argument("-k", type=COUNT, default=10, help="results per query (default: 10)")
    s.add_argument("--approximate", action="store_true", help="FAISS candidates re-ranked exactly (needs --ann at build)")
    s.add_argument("--candidates", type=COUNT, default=1000, help="candidates per query in approximate mode")
    s.add_argument("--nprobe", type=COUNT, default=32, help="IVF lists visited (HNSW: search breadth)")
    s.add_argument("--device", type=DEVICE, help="torch device that encodes the queries and scores them (default: cpu; "
                   "cuda holds the index on the GPU when it fits, else streams it there in blocks)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=run_search)


def run_build(args: argparse.Namespace) -> int:
    if sum(x is not None for x in (args.features, args.images, args.split)) != 1:
        raise ValueError("give exactly one of FEATURES, --images TXT or --split NAME")
    runs.check_output(args.out, "--out", [args.run, args.features, args.images, args.data], folder=True)
    runs.check_replaceable(args.out, "index", args.overwrite)
    model = load_model(args.run, device=args.device or "cpu")
    features, images = args.features, None
    if args.images is not None:
        images = image_list(args.images, args.image_root)
    elif args.split is not None:
        if not (args.data or model.options.get("data")):
            raise ValueError("--split needs --data DATA_DIR: the run records no data set")
        split = model_split(model, args.split, args.data)
        if model.config.backbone is None:
            features = split_images(model, split)
        else:
            images = image_paths(split.image_files or [], split.image_root)
    out = build_index(model, features, args.out, dtype=args.dtype, overwrite=args.overwrite, verbose=True,
                      images=images)
    if args.ann:
        build_ann(out, kind=args.ann, nlist=args.nlist, verbose=True)
    index = Index(out)
    bounded = ", 7-bit bounds for exact search" if "bounds" in index.meta else ""
    print(f"{out}: {len(index)} images x {index.meta['dim']} {index.meta['dtype']} ({index.method}{bounded})")
    return 0


def run_search(args: argparse.Namespace) -> int:
    sentences = list(args.sentences)
    if args.queries is not None:
        sentences += read_captions(args.queries)
    if not sentences:
        raise ValueError("no query: give sentences or --queries FILE")
    index = Index(args.index)
    report_unknown(index.model().vocab, sentences)
    errors, indices = index.search(sentences, args.k, approximate=args.approximate,
                                   candidates=args.candidates, nprobe=args.nprobe, device=args.device)
    results = format_results(sentences, errors, indices, index.image_files())
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(r["query"])
        for rank, hit in enumerate(r["results"], 1):
            shown = f"  {hit['file']}" if "file" in hit else ""
            print(f"  {rank:3d}  image {hit['image']:>9d}  error {hit['error']:.6f}{shown}")
    return 0


def format_results(sentences: Iterable[str], errors: np.ndarray, indices: np.ndarray,
                   files: Sequence[str] | None = None) -> list[dict]:
    """JSON-ready search results: per query, its images (with their files, when known) and errors in ranked order."""
    def hit(e: float, i: int) -> dict:
        return {"image": int(i), "error": float(e), **({"file": files[int(i)]} if files is not None else {})}

    return [{"query": q, "results": [hit(e, i) for e, i in zip(er, ix) if i >= 0]}
            for q, er, ix in zip(sentences, errors, indices)]
