"""``order-embedding serve``: the web app over a folder of runs."""
from __future__ import annotations

import argparse

from .help import parser_texts
from .types import DEVICE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", **parser_texts("serve"))
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="folder of run folders (or one run folder)")
    p.add_argument("--data", metavar="DATA_DIR", help="data set for browsing and search (default: each run's own)")
    p.add_argument("--images", metavar="IMAGE_ROOT", help="folder image files are served from (default: the data folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", type=DEVICE, default="cpu", help="torch device for encoding (default: cpu)")
    p.add_argument("--max-models", type=int, default=4, metavar="N",
                   help="run models (with their embeddings) kept loaded; the least recently used go first (default: 4)")
    p.add_argument("--index", action="append", default=[], metavar="INDEX",
                   help="an on-disk image index (from 'index build') to search on the Search page; repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..server import create_app
    except ImportError as e:
        raise ValueError(f"the server needs the 'serve' extra (pip install 'order-embedding[serve]'): {e}") from None
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_models < 1:
        raise ValueError(f"--max-models must be at least 1, got {args.max_models}")
    app = create_app(args.runs_dir, data_dir=args.data, image_root=args.images, device=args.device,
                     max_models=args.max_models, indexes=args.index)
    print(f"serving {args.runs_dir} on http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=30)
    return 0
