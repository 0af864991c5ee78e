"""Whether a shapes-world caption is true of a scene, read from the caption's words alone.

This is the demo's ground truth for retrieval beyond the one image a caption was written
for. It does not use the generator's recorded facts or wording code: it parses the text
(a count such as "exactly two shapes :" or "three objects in total :", then object
phrases "a [size] [colour] shape|noun [position]" joined by "," and "and"; or a count
alone, such as "only two objects") and matches
the phrases against the scene's ``objects`` (shape, colour, size, position). A caption
is true of a scene when every phrase matches a different object of the scene and any
stated count equals the number of objects.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

_SIZES = {"small": "small", "little": "small", "large": "large", "big": "large"}
_COLOURS = {"red", "green", "blue", "yellow", "purple", "cyan"}
_SHAPES = {"circle", "square", "triangle", "star", "cross"}
_NOUNS = {"shape", "shapes", "object", "objects", "thing"}
_POSITIONS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "centre": "centre",
              "middle": "centre"}
_NUMBERS = {"one": 1, "two": 2, "three": 3}
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
    with open(json_path, encoding="utf-8") as f:
        data = json.load(f)
    name = "val" if split == "dev" else split
    entries = [im for im in data["images"] if im["split"] == name]
    captions = [s["raw"] for im in entries for s in im["sentences"]]
    return captions, [im["objects"] for im in entries]
