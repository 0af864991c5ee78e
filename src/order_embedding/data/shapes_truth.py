"""Whether a shapes-world caption is true of a scene, read from the caption's words alone.

This is the demo's ground truth for retrieval beyond the one image a caption was written
for. It does not use the generator's recorded facts or wording code: it parses the text
(a count such as "exactly two shapes :" or "three objects in total :", then object
phrases "a [size] [colour] shape|noun [position]" joined by "," and "and"; or a count
alone, such as "only two objects") and matches
the phrases against the scene's ``objects`` (shape, colour, size, position). A caption
is true of a scene when every phrase matches a different object of the scene and any
stated count equals the number of objects.

:func:`truth_matrix` answers the same question for many captions and scenes at once, and
:func:`more_general` decides whether one caption is strictly more general than another
over every scene of the world: a scene holds 1 to 3 objects at distinct positions, each
with a shape, colour, size and position.
"""
from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .splits import load_karpathy_json

_SIZES = {"small": "small", "little": "small", "large": "large", "big": "large"}
_COLOURS = {"red", "green", "blue", "yellow", "purple", "cyan"}
_SHAPES = {"circle", "square", "triangle", "star", "cross"}
_NOUNS = {"shape", "shapes", "object", "objects", "thing"}
_POSITIONS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "centre": "centre",
              "middle": "centre"}
_NUMBERS = {"one": 1, "two": 2, "three": 3}
#: Every value of each attribute, and the most objects a scene holds.
_VALUES = {"shape": tuple(sorted(_SHAPES)), "colour": tuple(sorted(_COLOURS)), "size": ("large", "small"),
           "position": ("bottom", "centre", "left", "right", "top")}
_MAX_OBJECTS = 3
_FILLER = {"a", "an", "the", "on", "at", "near", "in", "there", "is", "picture", "image", "of", "exactly", "only",
           "total"}


@dataclass(frozen=True)
class Claim:
    """What a caption says: object descriptions (attribute -> value) and, if stated, the object count."""

    objects: tuple[tuple[tuple[str, str], ...], ...]
    count: int | None


def parse_caption(text: str) -> Claim:
    """The claim of one caption; a word outside the shapes world's vocabulary raises ``ValueError``."""
    tokens = text.split()
    count = None
    if ":" in tokens or any(w in _NUMBERS for w in tokens):
        k = tokens.index(":") if ":" in tokens else len(tokens)  # a count alone has no ':'
        head, tokens = tokens[:k], tokens[k + 1:]
        numbers = [_NUMBERS[w] for w in head if w in _NUMBERS]
        if len(numbers) != 1:
            raise ValueError(f"caption {text!r}: no single count before ':' (or in a caption without one)")
        count = numbers[0]
        if not tokens:
            return Claim((), count)
    phrases: list[list[str]] = [[]]
    for w in tokens:
        if w in (",", "and"):
            phrases.append([])
        else:
            phrases[-1].append(w)
    objects = []
    for phrase in phrases:
        if not phrase:
            raise ValueError(f"caption {text!r}: an empty phrase")
        desc: dict[str, str] = {}
        for w in phrase:
            for table, attribute in ((_SIZES, "size"), (_POSITIONS, "position")):
                if w in table:
                    desc[attribute] = table[w]
            if w in _COLOURS:
                desc["colour"] = w
            elif w in _SHAPES:
                desc["shape"] = w
            elif w not in _SIZES and w not in _POSITIONS and w not in _NOUNS and w not in _FILLER:
                raise ValueError(f"caption {text!r}: unknown word {w!r}")
        objects.append(tuple(sorted(desc.items())))
    return Claim(tuple(objects), count)


def is_true_of(claim: Claim, objects: list[dict[str, Any]]) -> bool:
    """Whether the claim holds in a scene: distinct matching objects for its phrases, and its count."""
    if claim.count is not None and claim.count != len(objects):
        return False
    if len(claim.objects) > len(objects):
        return False
    return any(all(all(objects[j][a] == v for a, v in desc) for desc, j in zip(claim.objects, chosen))
               for chosen in itertools.permutations(range(len(objects)), len(claim.objects)))


def load_scenes(json_path: str | os.PathLike, split: str) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """The captions (in file order, five per image) and each image's objects of one split ("dev" means val)."""
    data = load_karpathy_json(Path(json_path))
    name = "val" if split == "dev" else split
    entries = [im for im in data["images"] if im["split"] == name]
    captions = [s["raw"] for im in entries for s in im["sentences"]]
    return captions, [im["objects"] for im in entries]


_ATTRIBUTES = tuple(_VALUES)


@dataclass(frozen=True)
class SceneTable:
    """Scenes as arrays for :func:`claim_truth`: ``values[scene, slot, attribute]``, the index of the value in
    ``_VALUES[attribute]`` (attributes in that order; -1 in an empty slot), and each scene's number of objects."""

    values: np.ndarray
    counts: np.ndarray


def scene_table(scenes: Sequence[Sequence[dict[str, Any]]]) -> SceneTable:
    """The table of scenes given as lists of objects (attribute -> value)."""
    width = max((len(s) for s in scenes), default=0)
    values = np.full((len(scenes), width, len(_ATTRIBUTES)), -1, dtype=np.int8)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene):
            values[i, j] = [_VALUES[a].index(obj[a]) for a in _ATTRIBUTES]
    return SceneTable(values, np.array([len(s) for s in scenes], dtype=np.int64))


def claim_truth(claim: Claim, table: SceneTable) -> np.ndarray:
    """Whether ``claim`` is true of each scene of ``table`` (:func:`is_true_of` for many scenes at once)."""
    n, width = table.values.shape[:2]
    holds = np.ones(n, dtype=bool) if claim.count is None else table.counts == claim.count
    if len(claim.objects) > width:
        return np.zeros(n, dtype=bool)
    present = np.arange(width) < table.counts[:, None]
    matches = []  # per phrase: which slots of each scene it describes
    for desc in claim.objects:
        match = present.copy()
        for attribute, value in desc:
            match &= table.values[:, :, _ATTRIBUTES.index(attribute)] == _VALUES[attribute].index(value)
        matches.append(match)
    found = np.zeros(n, dtype=bool)
    for chosen in itertools.permutations(range(width), len(matches)):
        assigned = np.ones(n, dtype=bool)
        for match, j in zip(matches, chosen):
            assigned &= match[:, j]
        found |= assigned
    return holds & found


def truth_matrix(captions: Sequence[str], scenes: Sequence[Sequence[dict[str, Any]]]) -> np.ndarray:
    """Captions x scenes: whether each caption is true of each scene."""
    table = scene_table(scenes)
    unique, row = np.unique(np.asarray(captions, dtype=object), return_inverse=True)  # general captions recur
    truth = np.array([claim_truth(parse_caption(c), table) for c in unique], dtype=bool).reshape(len(unique), len(scenes))
    return truth[row.reshape(-1)]


def _universe(claims: Sequence[Claim]) -> SceneTable:
    """Every scene of the world up to values no claim names: those are interchangeable for the claims, so each
    attribute takes the named values and one other (positions: enough others to fill a scene's slots)."""
    named = {a: {v for c in claims for d in c.objects for a2, v in d if a2 == a} for a in _ATTRIBUTES}
    values = {}
    for a, all_values in _VALUES.items():
        others = [v for v in all_values if v not in named[a]]
        kept = sorted(named[a]) + others[:_MAX_OBJECTS if a == "position" else 1]
        values[a] = [all_values.index(v) for v in kept]
    looks = np.array(list(itertools.product(values["shape"], values["colour"], values["size"])), dtype=np.int8)
    blocks, counts = [], []
    for n in range(1, _MAX_OBJECTS + 1):
        places = np.array(list(itertools.combinations(values["position"], n)), dtype=np.int8)
        chosen = looks[np.array(list(itertools.product(range(len(looks)), repeat=n)))]  # (looks^n, n, 3)
        block = np.full((len(places), len(chosen), _MAX_OBJECTS, len(_ATTRIBUTES)), -1, dtype=np.int8)
        block[:, :, :n, :3] = chosen[None]
        block[:, :, :n, 3] = places[:, None, :]
        blocks.append(block.reshape(-1, _MAX_OBJECTS, len(_ATTRIBUTES)))
        counts.append(np.full(len(blocks[-1]), n))
    return SceneTable(np.concatenate(blocks), np.concatenate(counts))


@functools.lru_cache(maxsize=4096)
def more_general(general: Claim, specific: Claim) -> bool:
    """Whether ``general`` is true of every scene ``specific`` is true of, and of some scene it is not."""
    table = _universe((general, specific))
    g, s = claim_truth(general, table), claim_truth(specific, table)
    return bool(np.all(g[s]) and np.any(g & ~s))
