"""Which (general, specific) caption pairs of the demo's hierarchy check a model orders correctly.

Reads a demo folder (``DIR/data`` and ``DIR/runs/RUN``, as ``order-embedding demo`` or
``experiments/demo_seeds.py`` leave them, or ``experiments/demo_swings.py``'s ``epochNN.safetensors``
copies) and prints, for each checkpoint, the hierarchy check over all pairs of a split and
split by the kind of pair (the kinds ``shapes.hierarchy_pairs`` builds):

- ``caption i < caption j``: two of an image's own captions; marked ``(only the count)``
  when the specific one adds nothing but the number of objects;
- ``constructed``: a new wording of a subset of a caption's facts, paired with that caption;
- ``cross-image``: a general caption of one image and a specific one of another.

Each figure is ``demo.hierarchy_accuracy`` on that kind's pairs (chance 50 %), with the
number of pairs; then the CPU model.

Usage: python experiments/hierarchy_pairs.py DIR [--split test] [--seed 0] [--run order]
       [--checkpoints model.safetensors epoch10.safetensors ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # machine.py
from machine import cpu_model  # noqa: E402

from order_embedding.data.shapes import ATTRIBUTES, JSON_NAME, hierarchy_pairs
from order_embedding.demo import hierarchy_accuracy
from order_embedding.inference import load_model


def stated_values(facts: dict) -> set[tuple[int, str, str]]:
    """A caption's stated attribute values as (object, attribute, value) triples."""
    return {(d["ref"], a, d[a]) for d in facts["objects"] for a in ATTRIBUTES if a in d}


def pair_kinds(json_path: Path, split: str, pairs: list[tuple[str, str]]) -> list[str]:
    """The kind of each (general, specific) pair, from the split's captions and their recorded facts."""
    data = json.loads(json_path.read_text())
    entries = [im for im in data["images"] if im["split"] == ("val" if split == "dev" else split)]
    where: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for k, im in enumerate(entries):
        for i, sentence in enumerate(im["sentences"]):
            where[sentence["raw"]].append((k, i))
    kinds = []
    for general, specific in pairs:
        own = [(a, i, j) for a, i in where.get(general, []) for b, j in where.get(specific, []) if a == b]
        if own:
            a, i, j = own[0]
            chain = entries[a]["caption_facts"]
            only_count = stated_values(chain[i]) == stated_values(chain[j])
            kinds.append(f"caption {i + 1} < caption {j + 1}" + (" (only the count)" if only_count else ""))
        else:
            kinds.append("cross-image" if general in where else "constructed")
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="demo folder holding data/ and runs/")
    ap.add_argument("--split", default="test", choices=("dev", "test"))
    ap.add_argument("--seed", type=int, default=0, help="the seed the demo was run with (it draws the pairs)")
    ap.add_argument("--run", default="order", help="run folder name under DIR/runs")
    ap.add_argument("--checkpoints", nargs="+", default=["model.safetensors"],
                    help="checkpoint files of the run folder to score")
    args = ap.parse_args()

    json_path = args.dir / "data" / JSON_NAME
    pairs = hierarchy_pairs(json_path, split=args.split, seed=args.seed)
    kinds = pair_kinds(json_path, args.split, pairs)
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for kind, pair in zip(kinds, pairs):
        by_kind[kind].append(pair)
    print(f"{args.dir}, {args.split} split, seed {args.seed}: {len(pairs)} pairs")
    for checkpoint in args.checkpoints:
        model = load_model(args.dir / "runs" / args.run, checkpoint=checkpoint)
        print(f"{checkpoint}: all {hierarchy_accuracy(model, pairs):.1f} %")
        for kind in sorted(by_kind):
            print(f"  {kind:<36} {hierarchy_accuracy(model, by_kind[kind]):5.1f} %  ({len(by_kind[kind])} pairs)")
    print(f"CPU: {cpu_model()}")


if __name__ == "__main__":
    main()
