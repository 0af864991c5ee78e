"""``order-embedding extract-features``: CNN features of a prepared data folder's images."""
from __future__ import annotations

import argparse
import os

from ..vision.features import CNNS, extract_features
from .help import parser_texts
from .types import COUNT, COUNT0, DEVICE, NAME


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract-features", **parser_texts("extract_features"))
    p.add_argument("data", metavar="DATA_DIR", help="folder written by 'order-embedding prepare'")
    p.add_argument("--cnn", default="vgg19", choices=CNNS, help="network (default: vgg19, fc7 after ReLU)")
    p.add_argument("--crops", type=int, default=10, choices=(10, 1), help="10 crops (corners, centre, mirrors) or 1")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default="imagenet", choices=("imagenet", "none"),
                   help="pretrained (fetched by torchvision into its cache on first use) or random weights")
    w.add_argument("--weights-file", metavar="PATH", help="a local weights file instead (.pth or .safetensors)")
    p.add_argument("--name", type=NAME, help="feature folder name under images/ (default: 10crop/1crop for vgg19, "
                                  "else CNN-10crop/CNN-1crop)")
    p.add_argument("--splits", nargs="+", metavar="SPLIT", help="splits to do (default: every {split}_images.txt)")
    p.add_argument("--image-root", help="folder the image lists are relative to (default: the data folder)")
    p.add_argument("--batch-size", type=COUNT, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--workers", type=COUNT0, default=min(4, os.cpu_count() or 1),
                   help="image-loading worker processes (default: up to 4)")
    p.add_argument("--device", type=DEVICE, help="torch device (default: cuda when present)")
    p.add_argument("--amp", action="store_true", help="float16 mixed precision on CUDA")
    p.add_argument("--overwrite", action="store_true", help="redo splits whose feature file exists")
    p.add_argument("--image-size", type=COUNT, help="crop side (default: 224; CLIP: its own)")
    p.add_argument("--resize-size", type=COUNT, help="shorter side before cropping (default: crop side * 256/224)")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name for --cnn clip")
    p.add_argument("--clip-pretrained", default="openai", help="open_clip pretrained tag for --cnn clip")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = extract_features(
        args.data, cnn=args.cnn, crops=args.crops, weights=args.weights_file or args.weights, name=args.name,
        splits=args.splits, image_root=args.image_root, batch_size=args.batch_size, workers=args.workers,
        device=args.device, amp=args.amp, overwrite=args.overwrite, image_size=args.image_size,
        resize_size=args.resize_size, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained,
        verbose=not args.quiet)
    for split, r in report.items():
        if r.get("skipped"):
            print(f"{split}: {r['path']} exists, skipped (--overwrite to redo)")
        else:
            print(f"{split}: {r['images']} images -> {r['path']}"
                  + (f" ({len(r['unreadable'])} unreadable, zero rows)" if r["unreadable"] else ""))
    return 0
