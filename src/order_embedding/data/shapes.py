"""The generated "shapes" world: small rendered scenes with captions from general to specific.

A scene holds 1 to 3 objects, each with a ``shape`` (circle, square, triangle, star,
cross), a ``colour`` (red, green, blue, yellow, purple, cyan), a ``size`` (small,
large) and a ``position`` (left, right, top, bottom, centre); no two objects share a
position, so objects never overlap. Every scene in one generated data set is
different from every other (train, val and test alike).

Each image gets five captions, from the most general to the full description, and
each one states strictly less than the next. A caption's meaning is a set of facts:
"there are distinct objects matching these (partial) descriptions", and possibly "there
are exactly n objects". The facts of a scene (every attribute of every object, and the
count) are put in one random order, the attributes object by object, the count at any
place among them; caption k states the first facts of that order, and caption 5 all of
them ("exactly two shapes : a large red circle on the left and a small blue star at the
top"). Caption 1 states one fact: one attribute of one object ("a red shape") or the
count alone ("exactly two shapes"). The count is stated at every level of generality
so that training on images can teach it: it decides which images a caption such as
"only two objects : a red shape" describes. Wording varies (big/large, little/small,
shape/object/thing, position phrase synonyms, an optional "there is" / "a picture of" /
"an image of" opening, the order of the objects, three forms of the count) without
changing the facts.

Geometry (``S`` = image size, coordinates in pixels; pixel ``(x, y)`` takes the colour
of the integer point ``(x, y)``, without anti-aliasing): position centres at ``(0.17 S, 0.5 S)`` left,
``(0.83 S, 0.5 S)`` right, ``(0.5 S, 0.17 S)`` top, ``(0.5 S, 0.83 S)`` bottom and
``(0.5 S, 0.5 S)`` centre (rounded), small objects shifted by up to ``0.04 S`` each
way; radius ``r`` = ``0.145 S`` (large) or ``0.09 S`` (small). A circle has radius
``r``; a square half-side ``0.72 r``; a triangle is equilateral, pointing up, with
its vertices at distance ``r`` from the centre; a star has five points at distance
``r`` (the first straight up) and inner corners at ``0.45 r``; a cross has arms of
half-length ``0.95 r`` and width ``0.6 r``. Objects are flat colours on a dark grey
background with light noise (uniform, in blocks of 2 x 2 pixels).

The data set is written in the layout of Karpathy's ``dataset_*.json`` files. Each
image entry also carries ``objects`` (shape, colour, size, position, pixel ``center``
and ``radius``) and ``caption_facts`` (the facts of each caption, ``{"count": n or
null, "objects": [{"ref": index into objects, attribute: value, ...}]}``). These are
for building hierarchy checks, tests and analysis; models read only images and text.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..runs import atomic_write
from .matches import MATCHES_NAME, save_matches
from .shapes_truth import load_scenes, more_general, parse_caption, truth_matrix
from .splits import load_karpathy_json

SHAPES = ("circle", "square", "triangle", "star", "cross")
#: Colour names and their RGB values.
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "cyan": (40, 200, 210),
}
SIZES = ("small", "large")
#: Positions and their centres as fractions of the image size (x, y).
POSITIONS = {
    "left": (0.17, 0.5),
    "right": (0.83, 0.5),
    "top": (0.5, 0.17),
    "bottom": (0.5, 0.83),
    "centre": (0.5, 0.5),
}
ATTRIBUTES = ("size", "colour", "shape", "position")
BACKGROUND = (40, 40, 40)
#: Probabilities of 1, 2 and 3 objects in a scene.
N_OBJECTS_P = (0.15, 0.35, 0.5)
RADIUS = {"small": 0.09, "large": 0.145}
JITTER = 0.04
JSON_NAME = "dataset_shapes.json"
IMAGE_DIR = "images"
MIN_IMAGE_SIZE = 32
MAX_IMAGES = 1_000_000

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_NOUNS = ("shape", "object", "thing")
_POSITION_PHRASES = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "centre": ("in the centre", "in the middle"),
}
_OPENINGS = ("", "there is", "a picture of", "an image of")
_NUMBERS = {1: "one", 2: "two", 3: "three"}
_COUNT_FORMS = ("exactly {n} {noun}", "only {n} {noun}", "{n} {noun} in total")
_COUNT_NOUNS = {True: ("shape", "object"), False: ("shapes", "objects")}
#: Probabilities that an object's first stated attribute is size, colour, shape or position.
_FIRST_ATTRIBUTE_P = (0.1, 0.4, 0.4, 0.1)
_SPLITS = ("train", "val", "test")

Facts = dict[str, Any]


# ---------------------------------------------------------------- scenes and drawing


def sample_scene(rng: random.Random) -> list[dict[str, str]]:
    """A random scene: 1-3 objects at distinct positions, attributes drawn uniformly."""
    n = rng.choices((1, 2, 3), weights=N_OBJECTS_P)[0]
    colours = list(COLOURS)
    return [
        {"shape": rng.choice(SHAPES), "colour": rng.choice(colours), "size": rng.choice(SIZES), "position": p}
        for p in rng.sample(list(POSITIONS), n)
    ]


def scene_key(objects: list[dict[str, str]]) -> tuple:
    """A scene's identity: its objects' attribute values, in a canonical order."""
    return tuple(sorted(tuple(o[a] for a in ATTRIBUTES) for o in objects))


def _place(obj: dict[str, str], image_size: int, rng: random.Random) -> tuple[list[int], float]:
    """Pixel centre and radius of an object."""
    fx, fy = POSITIONS[obj["position"]]
    cx, cy = round(fx * image_size), round(fy * image_size)
    if obj["size"] == "small":
        j = round(JITTER * image_size)
        cx += rng.randint(-j, j)
        cy += rng.randint(-j, j)
    return [cx, cy], RADIUS[obj["size"]] * image_size


def _outline(shape: str, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a triangle or star of radius ``r`` centred on the origin."""
    if shape == "triangle":
        return [(r * math.cos(math.radians(t)), r * math.sin(math.radians(t))) for t in (-90, 30, 150)]
    if shape == "star":
        return [((r if k % 2 == 0 else 0.45 * r) * math.cos(math.radians(-90 + 36 * k)),
                 (r if k % 2 == 0 else 0.45 * r) * math.sin(math.radians(-90 + 36 * k))) for k in range(10)]
    raise ValueError(f"{shape!r} has no polygon outline")


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Which points at offsets (dx, dy) from a shape's centre lie inside it."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.72 * r
    if shape == "cross":
        a, w = 0.95 * r, 0.3 * r
        ax, ay = np.abs(dx), np.abs(dy)
        return ((ax <= w) & (ay <= a)) | ((ay <= w) & (ax <= a))
    pts = _outline(shape, r)
    inside = np.zeros(dx.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        if y1 != y2:
            inside ^= ((y1 > dy) != (y2 > dy)) & (dx < x1 + (dy - y1) * (x2 - x1) / (y2 - y1))
    return inside


def _render(objects: list[dict[str, Any]], image_size: int, noise: int, rng: np.random.Generator) -> Image.Image:
    """The scene's RGB image: noisy background, flat-coloured objects sampled at pixel centres."""
    pixels = np.empty((image_size, image_size, 3), dtype=np.int16)
    pixels[:] = BACKGROUND
    if noise:
        half = (image_size + 1) // 2
        grain = rng.integers(-noise, noise + 1, size=(half, half, 1), dtype=np.int16)
        pixels += grain.repeat(2, axis=0).repeat(2, axis=1)[:image_size, :image_size]
    for o in objects:
        (cx, cy), r = o["center"], o["radius"]
        lo_x, lo_y = max(0, math.floor(cx - r)), max(0, math.floor(cy - r))
        hi_x, hi_y = min(image_size, math.ceil(cx + r) + 1), min(image_size, math.ceil(cy + r) + 1)
        dy, dx = np.mgrid[lo_y - cy:hi_y - cy, lo_x - cx:hi_x - cx].astype(np.float64)
        window = pixels[lo_y:hi_y, lo_x:hi_x]
        window[_shape_mask(o["shape"], dx, dy, r)] = COLOURS[o["colour"]]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- captions


def _attribute_order(rng: random.Random) -> list[str]:
    """The order in which one object's attributes are stated."""
    first = rng.choices(ATTRIBUTES, weights=_FIRST_ATTRIBUTE_P)[0]
    rest = rng.sample([a for a in ATTRIBUTES if a != first], len(ATTRIBUTES) - 1)
    if "position" in rest and rng.random() < 0.7:
        rest.remove("position")
        rest.append("position")
    return [first] + rest


def _facts(objects: list[dict[str, Any]], stated: list[tuple[int, str]], count: bool) -> Facts:
    """The caption stating attributes ``stated`` ((object index, attribute) pairs), and the count if asked."""
    descs: dict[int, dict[str, Any]] = {}
    for ref, attr in stated:
        descs.setdefault(ref, {"ref": ref})[attr] = objects[ref][attr]
    return {"count": len(objects) if count else None, "objects": list(descs.values())}


def _caption_chain(objects: list[dict[str, Any]], rng: random.Random) -> list[Facts]:
    """Five nested fact sets, each stating strictly more than the previous; the last says everything."""
    sequence: list[tuple[int, str] | None] = [
        (ref, attr) for ref in rng.sample(range(len(objects)), len(objects)) for attr in _attribute_order(rng)]
    sequence.insert(rng.randint(0, len(sequence)), None)  # None: the count
    cuts = [1] + sorted(rng.sample(range(2, len(sequence)), 3)) + [len(sequence)]
    return [_facts(objects, [f for f in sequence[:c] if f is not None], count=None in sequence[:c]) for c in cuts]


def _object_phrase(desc: dict[str, Any], rng: random.Random) -> list[str]:
    words = []
    if "size" in desc:
        words.append(rng.choice(_SIZE_WORDS[desc["size"]]))
    if "colour" in desc:
        words.append(desc["colour"])
    words.append(desc["shape"] if "shape" in desc else rng.choice(_NOUNS))
    article = "an" if words[0][0] in "aeiou" else "a"
    words = [article] + words
    if "position" in desc:
        words += rng.choice(_POSITION_PHRASES[desc["position"]]).split()
    return words


def caption_text(facts: Facts, rng: random.Random) -> str:
    """One wording (lower case, space-separated tokens) of a caption's facts."""
    descs = [d for d in facts["objects"] if len(d) > 1]
    if not descs and facts["count"] is None:
        raise ValueError("a caption must state at least one attribute or the count")
    body: list[str] = []
    for k, p in enumerate(_object_phrase(d, rng) for d in rng.sample(descs, len(descs))):
        body += ([] if k == 0 else ["and"] if k == len(descs) - 1 else [","]) + p
    if facts["count"] is not None:
        n = int(facts["count"])
        form = rng.choice(_COUNT_FORMS)
        noun = rng.choice(_COUNT_NOUNS[n == 1])
        head = form.format(n=_NUMBERS[n], noun=noun).split() + ([":"] if body else [])
    else:
        head = rng.choice(_OPENINGS).split()
    return " ".join(head + body)


def entails(specific: Facts, general: Facts) -> bool:
    """Whether a caption with facts ``specific`` implies one with facts ``general``.

    True when the general caption's object descriptions map to distinct descriptions of
    the specific one, each stating a subset of the attribute values of its image, and any
    count it states is stated equally by the specific caption.
    """
    if general["count"] is not None and general["count"] != specific["count"]:
        return False
    g = [{a: d[a] for a in ATTRIBUTES if a in d} for d in general["objects"]]
    s = [{a: d[a] for a in ATTRIBUTES if a in d} for d in specific["objects"]]
    if len(g) > len(s):
        return False
    return any(
        all(gd.items() <= s[j].items() for gd, j in zip(g, perm))
        for perm in itertools.permutations(range(len(s)), len(g))
    )


def strictly_generalises(general: Facts, specific: Facts) -> bool:
    """``general`` is implied by ``specific`` but does not imply it."""
    return entails(specific, general) and not entails(general, specific)


# ---------------------------------------------------------------- data set


def draw_scenes(counts: dict[str, int], rng: random.Random) -> dict[str, list[list[dict[str, str]]]]:
    """Distinct scenes for each split (``counts``: scenes per split), all samples of one distribution.

    The scenes of every split are drawn as one sequence of distinct scenes, then shuffled and dealt out.
    Dealing them out in the order they were drawn would not do: the scenes that come up most often (there
    are only 300 of one object) are used up early, so the split drawn first would hold most of them.
    """
    seen: set[tuple] = set()
    drawn: list[list[dict[str, str]]] = []
    while len(drawn) < sum(counts.values()):
        scene = sample_scene(rng)
        key = scene_key(scene)
        if key not in seen:
            seen.add(key)
            drawn.append(scene)
    rng.shuffle(drawn)
    out, start = {}, 0
    for split, n in counts.items():
        out[split], start = drawn[start:start + n], start + n
    return out


def _image_entry(imgid: int, split: str, scene: list[dict[str, str]], seed: int, image_size: int,
                 noise: int, name_width: int, out_images: Path) -> dict[str, Any]:
    """Place, render and write one image; return its Karpathy-style entry."""
    rng = random.Random(f"shapes:{seed}:{imgid}")
    objects = []
    for o in scene:
        center, radius = _place(o, image_size, rng)
        objects.append({**o, "center": center, "radius": radius})
    chain = _caption_chain(objects, rng)
    filename = f"{imgid:0{name_width}d}.png"
    _render(objects, image_size, noise, np.random.default_rng([seed, imgid, 2])).save(
        out_images / filename, format="PNG", compress_level=1)
    sentences = []
    for k, facts in enumerate(chain):
        raw = caption_text(facts, rng)
        sentences.append({"tokens": raw.split(), "raw": raw, "imgid": imgid, "sentid": 5 * imgid + k})
    return {
        "filepath": IMAGE_DIR,
        "filename": filename,
        "imgid": imgid,
        "split": split,
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
        "objects": objects,
        "caption_facts": chain,
    }


def generate_shapes(out_dir: str | os.PathLike, n_train: int = 8000, n_dev: int = 1000, n_test: int = 1000,
                    seed: int = 0, image_size: int = 64, noise: int = 6, verbose: bool = True) -> Path:
    """Write a shapes data set (``dataset_shapes.json``, ``images/*.png`` and the training split's known matches,
    :func:`write_train_matches`) and return the JSON path.

    Splits are named train, val (``n_dev`` images) and test, in that order of image ids; their
    scenes are samples of one distribution (:func:`draw_scenes`). The same arguments give the
    same bytes. ``noise`` is the amplitude of the uniform background noise (0 for a plain
    background).
    """
    counts = {"train": n_train, "val": n_dev, "test": n_test}
    for name, n in counts.items():
        if int(n) != n or n < 0:
            raise ValueError(f"number of {name} images must be a non-negative integer, got {n!r}")
    total = sum(counts.values())
    if not 0 < total <= MAX_IMAGES:
        raise ValueError(f"total number of images must be between 1 and {MAX_IMAGES}, got {total}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}")
    if not 0 <= noise <= 100:
        raise ValueError(f"noise must be between 0 and 100, got {noise}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    images = out / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)

    scenes = draw_scenes(counts, random.Random(f"shapes:{seed}"))
    width = max(5, len(str(total - 1)))
    jobs = [(split, scene) for split in _SPLITS for scene in scenes[split]]
    entries = [
        _image_entry(imgid, split, scene, seed, image_size, noise, width, images)
        for imgid, (split, scene) in enumerate(
            tqdm(jobs, desc="shapes", unit="img", disable=not verbose or total < 2000))
    ]
    path = out / JSON_NAME
    atomic_write(path, json.dumps({"dataset": "shapes", "images": entries}, separators=(",", ":")).encode())
    write_train_matches(out)
    return path


def write_train_matches(out_dir: str | os.PathLike) -> Path:
    """Write the known matches of the training split of the world in ``out_dir`` (every training image each
    training caption is true of, by :mod:`.shapes_truth`) and return the file's path."""
    captions, scenes = load_scenes(Path(out_dir) / JSON_NAME, "train")
    path = Path(out_dir) / MATCHES_NAME.format(split="train")
    save_matches(path, truth_matrix(captions, scenes))
    return path


# ---------------------------------------------------------------- hierarchy pairs


def _load_entries(json_path: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    data = load_karpathy_json(Path(json_path))
    if not isinstance(data, dict) or data.get("dataset") != "shapes":
        raise ValueError(f"{json_path}: not a shapes data set")
    name = "val" if split == "dev" else split
    entries = [im for im in data["images"] if im["split"] == name]
    if not entries:
        raise ValueError(f"{json_path}: no images in split {split!r}")
    for im in entries:
        if "caption_facts" not in im or len(im["caption_facts"]) != len(im["sentences"]):
            raise ValueError(f"{json_path}: image {im.get('imgid')} lacks caption_facts")
    return entries


#: The kinds of (general, specific) pair :func:`hierarchy_pairs` builds.
PAIR_KINDS = ("own captions", "constructed", "cross-image")


def hierarchy_pairs(json_path: str | os.PathLike, split: str = "test", n_pairs: int | None = None,
                    seed: int = 0) -> list[tuple[str, str]]:
    """(general, specific) caption pairs of a split where the first strictly generalises the second.

    For each image of ``split`` ("dev" means val):

    - the 10 pairs among its own five captions (caption i generalises caption j for i < j);
    - 2 constructed pairs: a new wording of a random strict subset of the facts of its
      caption 3, 4 or 5 (chosen at random), paired with that caption;
    - 1 cross-image pair: its caption 1 or 2 paired with caption 4 or 5 of another
      image of the split that implies it (when one is found among 50 random tries).

    Without ``n_pairs`` all pairs are returned in that order, image by image; otherwise
    ``n_pairs`` of them drawn at random without replacement. Pairs are unique.
    """
    pairs, rng = _kinded_pairs(json_path, split, seed)
    if n_pairs is None:
        return [(g, s) for g, s, _ in pairs]
    if not 0 <= n_pairs <= len(pairs):
        raise ValueError(f"n_pairs must be between 0 and {len(pairs)} for split {split!r}, got {n_pairs}")
    return [(g, s) for g, s, _ in rng.sample(pairs, n_pairs)]


def hierarchy_pairs_by_kind(json_path: str | os.PathLike, split: str = "test",
                            seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """All of :func:`hierarchy_pairs`, grouped by kind (:data:`PAIR_KINDS`)."""
    pairs, _ = _kinded_pairs(json_path, split, seed)
    return {kind: [(g, s) for g, s, k in pairs if k == kind] for kind in PAIR_KINDS}


def _kinded_pairs(json_path: str | os.PathLike, split: str,
                  seed: int) -> tuple[list[tuple[str, str, str]], random.Random]:
    """:func:`hierarchy_pairs`' pairs with their kinds, and the random generator that drew them."""
    entries = _load_entries(json_path, split)
    rng = random.Random(f"hierarchy:{seed}")
    pairs: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(general: str, specific: str, kind: str) -> None:
        if (general, specific) not in seen:
            seen.add((general, specific))
            pairs.append((general, specific, kind))

    for idx, im in enumerate(entries):
        raws = [s["raw"] for s in im["sentences"]]
        chain = im["caption_facts"]
        for i, j in itertools.combinations(range(len(raws)), 2):
            add(raws[i], raws[j], "own captions")
        for _ in range(2):
            j = rng.randrange(2, len(chain))
            stated = sorted((d["ref"], a) for d in chain[j]["objects"] for a in ATTRIBUTES if a in d)
            keep_count = chain[j]["count"] is not None and rng.random() < 0.5
            most = len(stated) - (0 if chain[j]["count"] is not None and not keep_count else 1)
            keep = sorted(rng.sample(range(len(stated)), rng.randint(1, most)))
            general = _facts(im["objects"], [stated[k] for k in keep], count=keep_count)
            add(caption_text(general, rng), raws[j], "constructed")
        if len(entries) > 1:
            i = rng.randrange(2)
            for _ in range(50):
                other = rng.randrange(len(entries) - 1)
                other += other >= idx
                j = rng.randrange(3, 5)
                if strictly_generalises(chain[i], entries[other]["caption_facts"][j]):
                    add(raws[i], entries[other]["sentences"][j]["raw"], "cross-image")
                    break
    return pairs, rng


# ---------------------------------------------------------------- length-controlled pairs


def word_count(caption: str) -> int:
    """The number of words of a caption (its tokens less the punctuation "," and ":")."""
    return sum(t not in (",", ":") for t in caption.split())


_SIZE_WORD_SET = {w for words in _SIZE_WORDS.values() for w in words}
_COUNT_WORD_SET = {w for form in _COUNT_FORMS for w in form.split() if "{" not in w} | set(_NUMBERS.values())


def _split_caption(tokens: list[str]) -> tuple[list[str], list[str], list[list[str]]]:
    """A caption's head (an opening or a count, with its ":"), the separators between its object phrases, and
    the phrases."""
    if ":" in tokens:
        k = tokens.index(":") + 1
    elif tokens and tokens[0] in _COUNT_WORD_SET and any(t in _NUMBERS.values() for t in tokens):
        k = len(tokens)  # the count alone
    else:
        k = max((len(o.split()) for o in _OPENINGS if o and tokens[:len(o.split())] == o.split()), default=0)
    separators: list[str] = []
    phrases: list[list[str]] = [[]]
    for t in tokens[k:]:
        if t in (",", "and"):
            separators.append(t)
            phrases.append([])
        else:
            phrases[-1].append(t)
    return tokens[:k], separators, phrases if tokens[k:] else []


def _generalised_wording(caption: str, rng: random.Random) -> str | None:
    """A caption that states part of what ``caption`` states, with at least as many words, made by one or two
    edits of its words (a shape named by a general noun; a size, colour or position phrase left out; the count
    left out), an opening (or a longer count form) making up the words left out; None when none fits."""
    head, separators, phrases = _split_caption(caption.split())
    counted = ":" in head or (head and not phrases)
    edits: list[tuple[str, int]] = []
    for i, phrase in enumerate(phrases):
        edits += [("noun", i)] if any(w in SHAPES for w in phrase) else []
        edits += [("size", i)] if any(w in _SIZE_WORD_SET for w in phrase) else []
        edits += [("colour", i)] if any(w in COLOURS for w in phrase) else []
        edits += [("position", i)] if len(phrase) > 3 and phrase[-3] in ("on", "at", "near", "in") else []
    edits += [("count", -1)] if counted and phrases else []
    if not edits:
        return None
    phrases = [list(p) for p in phrases]
    for edit, i in rng.sample(edits, min(len(edits), rng.choice((1, 2)))):
        if edit == "noun":
            phrases[i] = [rng.choice(_NOUNS) if w in SHAPES else w for w in phrases[i]]
        elif edit == "size":
            phrases[i] = [w for w in phrases[i] if w not in _SIZE_WORD_SET]
        elif edit == "colour":
            phrases[i] = [w for w in phrases[i] if w not in COLOURS]
        elif edit == "position":
            phrases[i] = phrases[i][:-3]
        else:
            counted, head = False, []
    for p in phrases:
        p[0] = "an" if p[1][0] in "aeiou" else "a"
    body: list[str] = []
    for k, p in enumerate(phrases):
        body += ([separators[k - 1]] if k else []) + p
    short = word_count(caption) - word_count(" ".join(body))
    if counted:
        if word_count(" ".join(head)) < short:  # the count form with the most words: "{n} {noun} in total"
            n, noun = (w for w in head if w not in _COUNT_WORD_SET - set(_NUMBERS.values()) and w != ":")
            head = _COUNT_FORMS[2].format(n=n, noun=noun).split() + ([":"] if body else [])
    else:
        fitting = [o.split() for o in _OPENINGS if len(o.split()) >= short]
        if not fitting:
            return None
        head = rng.choice(fitting)
    general = " ".join(head + body)
    return general if word_count(general) >= word_count(caption) else None


def length_controlled_pairs(json_path: str | os.PathLike, split: str = "test", seed: int = 0,
                            tries: int = 8) -> list[tuple[str, str]]:
    """(general, specific) caption pairs of a split in which the general caption has at least as many words.

    For each image, one of its captions (the specific one, drawn at random) and a generalised wording of it
    (:func:`_generalised_wording`); the pair is kept when the truth checker finds the general caption true of
    every scene the specific one is true of, and of some scene it is not (:func:`shapes_truth.more_general`).
    Up to ``tries`` draws per image; an image whose draws all fail gives no pair. Pairs are unique.
    """
    entries = _load_entries(json_path, split)
    rng = random.Random(f"length-controlled:{seed}")
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for im in entries:
        for _ in range(tries):
            specific = rng.choice(im["sentences"])["raw"]
            general = _generalised_wording(specific, rng)
            if (general is not None and (general, specific) not in seen
                    and more_general(parse_caption(general), parse_caption(specific))):
                seen.add((general, specific))
                pairs.append((general, specific))
                break
    return pairs
