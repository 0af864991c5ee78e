"""The generated entailment corpus: premise-hypothesis pairs in the shapes world's caption grammar.

Each scene of :mod:`order_embedding.data.shapes` (1 to 3 objects, each with a shape,
colour, size and position, no two at one position) gives one premise: the count and a
phrase for every object, as the full captions of the shapes data set say ("exactly two
shapes : a large red circle on the left and a small blue star at the top"), except that
0, 1 or 2 attribute values are left unstated ("a red circle on the left"), so that some
hypotheses can be neither true nor false. Hypotheses are sentences of the same grammar,
built three ways:

- a strict generalisation of the premise (a subset of its facts, possibly reworded);
- a generalisation with one stated value changed to another colour, size, shape or
  position (often one that another object of the scene has), or a stated count changed;
- a generalisation plus a value the premise leaves unstated (a detail it does not give).

The gold label is not the construction's but the meaning's. The scenes consistent with a
premise are its objects with every unstated value filled in every possible way (positions
kept distinct); a hypothesis is true of a scene when its phrases match distinct objects
and any stated count is right. The label is ``entailment`` when the hypothesis is true of
every consistent scene, ``contradiction`` when of none, ``neutral`` otherwise. Entailed
and neutral pairs differ in direction (the premise states more, or the hypothesis does),
and many contradictions reuse the premise's own words, which is what a symmetric
similarity or a word-overlap count cannot see.

Scenes are distinct across train, dev and test, and the three splits are samples of one
distribution (:func:`~order_embedding.data.shapes.draw_scenes`). The corpus is written in
SNLI's JSON-lines format, ``snli_1.0_{train,dev,test}.jsonl``, and read back by :mod:`.snli`
like SNLI.
"""
from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.shapes import (
    ATTRIBUTES,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    caption_text,
    draw_scenes,
    entails,
)
from ..options import positive_int
from ..runs import atomic_write
from .snli import SPLITS

VALUES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES,
                                      "position": tuple(POSITIONS)}
#: Probabilities that a premise leaves 0, 1 or 2 attribute values unstated.
OMITTED_P = (0.2, 0.4, 0.4)
#: Hypotheses sought per premise for each label (fewer when a label cannot be reached).
PER_LABEL = 2
_TRIES = 40

Facts = dict[str, Any]


@dataclass(frozen=True)
class CorpusConfig:
    """Sizes of the generated corpus (scenes per split; each gives up to ``3 * PER_LABEL`` pairs) and its seed."""

    train: int = 4000
    dev: int = 500
    test: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        for split in SPLITS:
            object.__setattr__(self, split, positive_int(getattr(self, split), f"the number of {split} scenes"))


def _facts(objects: list[dict[str, str]], stated: list[tuple[int, str]], count: bool) -> Facts:
    descs: dict[int, dict[str, Any]] = {}
    for ref, attr in sorted(stated):
        descs.setdefault(ref, {"ref": ref})[attr] = objects[ref][attr]
    return {"count": len(objects) if count else None, "objects": list(descs.values())}


def consistent_scenes(objects: list[dict[str, str]], omitted: list[tuple[int, str]]) -> list[Facts]:
    """Every scene a premise allows: ``objects`` with the ``omitted`` (object, attribute) values filled
    in all ways that keep positions distinct, as fully stated facts."""
    scenes = []
    for values in itertools.product(*(VALUES[attr] for _, attr in omitted)):
        filled = [dict(o) for o in objects]
        for (ref, attr), value in zip(omitted, values):
            filled[ref][attr] = value
        if len({o["position"] for o in filled}) == len(filled):
            scenes.append({"count": len(filled),
                           "objects": [{"ref": k, **{a: o[a] for a in ATTRIBUTES}} for k, o in enumerate(filled)]})
    return scenes


def label_of(hypothesis: Facts, scenes: list[Facts]) -> str:
    """``entailment`` if the hypothesis is true of every scene, ``contradiction`` if of none, else ``neutral``."""
    truths = [entails(scene, hypothesis) for scene in scenes]
    return "entailment" if all(truths) else "contradiction" if not any(truths) else "neutral"


def _generalisation(stated: list[tuple[int, str]], rng: random.Random) -> tuple[list[tuple[int, str]], bool]:
    """A random strict subset of the premise's facts (its stated values and the count)."""
    while True:
        keep = rng.sample(stated, rng.randint(1, len(stated)))
        count = rng.random() < 0.3
        if len(keep) < len(stated) or not count:
            return keep, count


def _other_value(objects: list[dict[str, str]], ref: int, attr: str, rng: random.Random) -> str:
    """Another value of an attribute: often one another object has, else any other."""
    mine = objects[ref][attr]
    others = [o[attr] for k, o in enumerate(objects) if k != ref and o[attr] != mine]
    if others and rng.random() < 0.6:
        return rng.choice(others)
    return rng.choice([v for v in VALUES[attr] if v != mine])


def _candidate(objects: list[dict[str, str]], stated: list[tuple[int, str]], omitted: list[tuple[int, str]],
               kind: str, rng: random.Random) -> Facts:
    keep, count = _generalisation(stated, rng)
    facts = _facts(objects, keep, count)
    if kind == "changed":
        if facts["count"] is not None and rng.random() < 0.25:
            facts["count"] = rng.choice([n for n in (1, 2, 3) if n != len(objects)])
            return facts
        desc = rng.choice(facts["objects"])
        attr = rng.choice([a for a in ATTRIBUTES if a in desc])
        desc[attr] = _other_value(objects, desc["ref"], attr, rng)
    elif kind == "added" and omitted:
        ref, attr = rng.choice(omitted)
        desc = next((d for d in facts["objects"] if d["ref"] == ref), None)
        if desc is None:
            desc = {"ref": ref}
            facts["objects"].append(desc)
        desc[attr] = rng.choice(VALUES[attr])
    return facts


def scene_pairs(objects: list[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    """The pairs of one scene: its premise with up to :data:`PER_LABEL` hypotheses of each label."""
    everything = [(k, a) for k in range(len(objects)) for a in ATTRIBUTES]
    omitted = sorted(rng.sample(everything, rng.choices((0, 1, 2), weights=OMITTED_P)[0]))
    stated = [f for f in everything if f not in omitted]
    premise = caption_text(_facts(objects, stated, count=True), rng)
    scenes = consistent_scenes(objects, omitted)
    wanted = {label: PER_LABEL for label in ("entailment", "neutral", "contradiction")}
    seen: set[str] = {premise}
    pairs = []
    for _ in range(_TRIES):
        if not any(wanted.values()):
            break
        kind = rng.choice(["general", "changed", "added"] if omitted else ["general", "changed"])
        facts = _candidate(objects, stated, omitted, kind, rng)
        label = label_of(facts, scenes)
        if not wanted[label]:
            continue
        hypothesis = caption_text(facts, rng)
        if hypothesis in seen:
            continue
        seen.add(hypothesis)
        wanted[label] -= 1
        pairs.append({"gold_label": label, "sentence1": premise, "sentence2": hypothesis})
    return pairs


def generate_corpus(config: CorpusConfig = CorpusConfig()) -> dict[str, list[dict[str, str]]]:
    """The corpus' records by split; same config, same corpus.

    Each record has SNLI's ``gold_label``, ``sentence1`` (premise), ``sentence2`` (hypothesis)
    and ``pairID``; ``captionID`` names the scene the premise describes: its objects as
    "size colour shape position", joined by ";".
    """
    rng = random.Random(f"entailment:{config.seed}")
    scenes = draw_scenes({split: getattr(config, split) for split in SPLITS}, rng)
    out: dict[str, list[dict[str, str]]] = {}
    for split in SPLITS:
        records: list[dict[str, str]] = []
        for objects in scenes[split]:
            scene = ";".join(" ".join(o[a] for a in ATTRIBUTES) for o in objects)
            for pair in scene_pairs(objects, rng):
                records.append({**pair, "captionID": scene, "pairID": f"{split}-{len(records)}"})
        out[split] = records
    return out


def write_corpus(corpus: dict[str, list[dict[str, str]]], out_dir: str | os.PathLike) -> Path:
    """Write the corpus as ``snli_1.0_{split}.jsonl`` files (atomically) in ``out_dir``; returns the folder."""
    out = Path(out_dir)
    for split, records in corpus.items():
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        atomic_write(out / f"snli_1.0_{split}.jsonl", text.encode("utf-8"))
    return out
