"""The generated shapes world: layout, determinism, pixels, captions and hierarchy pairs.

The checks here read the captions with their own small parser and judge entailment with
their own semantics (a caption holds in its "canonical" scene), independent of the module.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from order_embedding.data import shapes

SIZE = 64
N_TRAIN, N_DEV, N_TEST = 60, 20, 40

# ------------------------------------------------------------- the test's own grammar

SIZE_WORDS = {"large": "large", "big": "large", "small": "small", "little": "small"}
COLOUR_WORDS = {"red", "green", "blue", "yellow", "purple", "cyan"}
SHAPE_WORDS = {"circle", "square", "triangle", "star", "cross"}
GENERIC_NOUNS = {"shape", "object", "thing"}
POSITION_WORDS = {
    ("on", "the", "left"): "left", ("at", "the", "left"): "left",
    ("on", "the", "right"): "right", ("at", "the", "right"): "right",
    ("at", "the", "top"): "top", ("near", "the", "top"): "top",
    ("at", "the", "bottom"): "bottom", ("near", "the", "bottom"): "bottom",
    ("in", "the", "centre"): "centre", ("in", "the", "middle"): "centre",
}
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3}
OPENINGS = [("there", "is"), ("a", "picture", "of"), ("an", "image", "of")]


def parse_object(words: list[str]) -> dict[str, str]:
    """One object phrase, e.g. 'a big red circle on the left' -> its attributes."""
    assert words[0] in ("a", "an"), words
    assert words[0] == ("an" if words[1][0] in "aeiou" else "a"), words
    rest, desc = words[1:], {}
    if rest[0] in SIZE_WORDS:
        desc["size"] = SIZE_WORDS[rest.pop(0)]
    if rest[0] in COLOUR_WORDS:
        desc["colour"] = rest.pop(0)
    noun = rest.pop(0)
    if noun in SHAPE_WORDS:
        desc["shape"] = noun
    else:
        assert noun in GENERIC_NOUNS, words
    if rest:
        desc["position"] = POSITION_WORDS[tuple(rest)]
    assert desc, words
    return desc


def parse_caption(text: str) -> tuple[int | None, list[dict[str, str]]]:
    """(count or None, object descriptions) of a caption."""
    tokens = text.split()
    assert text == text.lower() and " ".join(tokens) == text
    count = None
    if ":" in tokens or tokens[0] in ("exactly", "only") or tokens[0] in NUMBER_WORDS:
        k = tokens.index(":") if ":" in tokens else len(tokens)  # without ':' the count is the whole caption
        head, tokens = tokens[:k], tokens[k + 1:]
        if head[0] in ("exactly", "only"):
            number, noun = head[1:]
        else:
            number, noun, *tail = head
            assert tail == ["in", "total"], head
        count = NUMBER_WORDS[number]
        assert noun in (("shape", "object") if count == 1 else ("shapes", "objects")), head
        if not tokens:
            return count, []
    else:
        for opening in OPENINGS:
            if tuple(tokens[:len(opening)]) == opening:
                tokens = tokens[len(opening):]
                break
    phrases, current = [], []
    for t in tokens:
        if t in (",", "and"):
            phrases.append(current)
            current = []
        else:
            current.append(t)
    phrases.append(current)
    return count, [parse_object(p) for p in phrases]


def holds(caption: tuple[int | None, list[dict]], scene: list[dict], count_fixed: bool = True) -> bool:
    """Whether a parsed caption is true of a scene: distinct objects match its descriptions."""
    count, descs = caption
    if count is not None and (not count_fixed or count != len(scene)):
        return False
    return any(
        all(all(scene[j].get(a) == v for a, v in d.items()) for d, j in zip(descs, perm))
        for perm in itertools.permutations(range(len(scene)), len(descs))
    )


def implies(specific, general) -> bool:
    """Semantic entailment: the general caption holds in the specific one's canonical scene."""
    count, descs = specific
    scene = [dict(d) for d in descs] + [{} for _ in range((count or 0) - len(descs))]
    return holds(general, scene, count_fixed=count is not None)


def strictly_more_general(general: str, specific: str) -> bool:
    g, s = parse_caption(general), parse_caption(specific)
    return implies(s, g) and not implies(g, s)


# ------------------------------------------------------------- the test's own geometry

CENTRES = {"left": (0.17, 0.5), "right": (0.83, 0.5), "top": (0.5, 0.17), "bottom": (0.5, 0.83),
           "centre": (0.5, 0.5)}
RADII = {"small": 0.09 * SIZE, "large": 0.145 * SIZE}
RGB = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (235, 215, 40),
       "purple": (160, 60, 210), "cyan": (40, 200, 210)}


def analytic_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """The shape's pixels (pixel (x, y) takes the colour of the point (x, y))."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return np.hypot(dx, dy) <= r
    if shape == "square":
        return (abs(dx) <= 0.72 * r) & (abs(dy) <= 0.72 * r)
    if shape == "cross":
        a, w = 0.95 * r, 0.3 * r
        return ((abs(dx) <= w) & (abs(dy) <= a)) | ((abs(dy) <= w) & (abs(dx) <= a))
    if shape == "triangle":
        # Inside all three edges of the upward triangle (clockwise on screen, y down).
        corners = [(0.0, -r), (r * math.sqrt(3) / 2, r / 2), (-r * math.sqrt(3) / 2, r / 2)]
        inside = np.ones(dx.shape, dtype=bool)
        for (x1, y1), (x2, y2) in zip(corners, corners[1:] + corners[:1]):
            inside &= (x2 - x1) * (dy - y1) - (y2 - y1) * (dx - x1) >= 0
        return inside
    # Star: compare the distance from the centre with the outline's distance in that direction.
    rho = np.hypot(dx, dy)
    phi = np.mod(np.degrees(np.arctan2(dy, dx)) + 90, 72)
    phi = np.radians(np.minimum(phi, 72 - phi))  # angle from the nearest point, 0..36 degrees
    ox, oy = r, 0.0
    ix, iy = 0.45 * r * math.cos(math.radians(36)), 0.45 * r * math.sin(math.radians(36))
    ex, ey = ix - ox, iy - oy
    boundary = (ox * ey - oy * ex) / (np.cos(phi) * ey - np.sin(phi) * ex)
    return rho <= boundary


# ------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    path = shapes.generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=N_TRAIN, n_dev=N_DEV,
                                  n_test=N_TEST, seed=3, image_size=SIZE)
    return path, json.loads(path.read_text())


def scene_of(entry: dict) -> list[dict]:
    return [{a: o[a] for a in ("shape", "colour", "size", "position")} for o in entry["objects"]]


# ------------------------------------------------------------- tests


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = shapes.generate_shapes(tmp_path / "a", n_train=12, n_dev=4, n_test=4, seed=5)
    b = shapes.generate_shapes(tmp_path / "b", n_train=12, n_dev=4, n_test=4, seed=5)
    c = shapes.generate_shapes(tmp_path / "c", n_train=12, n_dev=4, n_test=4, seed=6)
    assert a.read_bytes() == b.read_bytes()
    files = sorted(p.name for p in (a.parent / "images").iterdir())
    assert files == sorted(p.name for p in (b.parent / "images").iterdir()) and len(files) == 20
    for name in files:
        assert (a.parent / "images" / name).read_bytes() == (b.parent / "images" / name).read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_splits_are_samples_of_one_distribution():
    # 4,000 distinct scenes use up most of the 300 one-object scenes (5 shapes x 6 colours x 2 sizes x 5
    # positions). Dealt out in the order drawn, the test split would get about twice its share of them.
    scenes = shapes.draw_scenes({"train": 3000, "val": 0, "test": 1000}, random.Random(0))
    assert [len(scenes[s]) for s in ("train", "val", "test")] == [3000, 0, 1000]
    keys = [shapes.scene_key(sc) for split in scenes.values() for sc in split]
    assert len(set(keys)) == 4000
    single = {s: 100 * np.mean([len(sc) == 1 for sc in scenes[s]]) for s in ("train", "test")}
    assert sum(len(sc) == 1 for split in scenes.values() for sc in split) <= 300
    assert abs(single["test"] - single["train"]) < 2.5, single


def test_karpathy_layout(dataset):
    path, data = dataset
    assert path.name == "dataset_shapes.json" and data["dataset"] == "shapes"
    images = data["images"]
    splits = [im["split"] for im in images]
    assert splits == ["train"] * N_TRAIN + ["val"] * N_DEV + ["test"] * N_TEST
    sentids = []
    for k, im in enumerate(images):
        assert im["imgid"] == k
        assert len(im["sentences"]) == 5
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        sentids += im["sentids"]
        for s in im["sentences"]:
            assert set(s) == {"tokens", "raw", "imgid", "sentid"}
            assert s["imgid"] == k and s["tokens"] == s["raw"].split() and s["raw"] == s["raw"].lower()
        assert (path.parent / im["filepath"] / im["filename"]).is_file()
    assert len(set(sentids)) == len(sentids)
    keys = [tuple(sorted(tuple(sorted(o.items())) for o in scene_of(im))) for im in images]
    assert len(set(keys)) == len(keys), "scenes repeat"
    assert {len(im["objects"]) for im in images} == {1, 2, 3}


def test_pixels_match_recorded_objects(dataset):
    path, data = dataset
    for im in data["images"]:
        with Image.open(path.parent / im["filepath"] / im["filename"]) as img:
            assert img.mode == "RGB" and img.size == (SIZE, SIZE)
            px = np.asarray(img).astype(int)
        covered = np.zeros((SIZE, SIZE), dtype=bool)
        for o in im["objects"]:
            cx, cy = o["center"]
            r = o["radius"]
            assert r == pytest.approx(RADII[o["size"]])
            fx, fy = CENTRES[o["position"]]
            slack = 3 if o["size"] == "small" else 0
            assert abs(cx - fx * SIZE) <= slack + 0.5 and abs(cy - fy * SIZE) <= slack + 0.5
            assert tuple(px[cy, cx]) == RGB[o["colour"]]
            y, x = np.mgrid[0:SIZE, 0:SIZE]
            near = (x - cx) ** 2 + (y - cy) ** 2 <= (1.1 * r + 1) ** 2
            mask = near & np.all(px == RGB[o["colour"]], axis=-1)
            covered |= near

            def iou(shape: str, size: str, cx: int = cx, cy: int = cy, mask: np.ndarray = mask) -> float:
                ref = analytic_mask(shape, cx, cy, RADII[size])
                return (mask & ref).sum() / (mask | ref).sum()

            scores = {(s, z): iou(s, z) for s in SHAPE_WORDS for z in RADII}
            best = max(scores, key=scores.get)
            assert best == (o["shape"], o["size"]) and scores[best] > 0.95, (o, scores)
        # Away from the objects: grey background, no object colours.
        rest = px[~covered]
        assert np.all(rest[:, 0] == rest[:, 1]) and np.all(rest[:, 1] == rest[:, 2])
        assert rest.min() >= 40 - 6 and rest.max() <= 40 + 6


def test_captions_are_true_and_form_a_strict_chain(dataset):
    _, data = dataset
    for im in data["images"]:
        scene = scene_of(im)
        raws = [s["raw"] for s in im["sentences"]]
        parsed = [parse_caption(r) for r in raws]
        for caption in parsed:
            assert holds(caption, scene), (raws, scene)
        # Caption 1 states one fact: one attribute of one object, or the count alone.
        assert (parsed[0][0] is None and len(parsed[0][1]) == 1 and len(parsed[0][1][0]) == 1
                or parsed[0] == (len(scene), []))
        assert parsed[4][0] == len(scene) and len(parsed[4][1]) == len(scene)
        assert all(len(d) == 4 for d in parsed[4][1])
        for i in range(4):
            assert strictly_more_general(raws[i], raws[i + 1]), (raws[i], raws[i + 1])
        # The recorded facts say what the text says.
        for (count, descs), facts in zip(parsed, im["caption_facts"]):
            assert count == facts["count"]
            recorded = [{a: v for a, v in d.items() if a != "ref"} for d in facts["objects"]]
            key = lambda d: sorted(d.items())  # noqa: E731
            assert sorted(descs, key=key) == sorted(recorded, key=key)
            for d in facts["objects"]:
                assert all(scene[d["ref"]][a] == v for a, v in d.items() if a != "ref")


def test_the_count_is_stated_at_every_level_of_generality(dataset):
    """Captions 1-4 state the count in some images and not in others (caption 5 always does)."""
    _, data = dataset
    counts = np.array([[parse_caption(s["raw"])[0] is not None for s in im["sentences"]] for im in data["images"]])
    assert counts[:, 4].all()
    assert counts[:, :4].any(axis=0).all() and not counts[:, :4].all(axis=0).any(), counts.mean(axis=0)
    # once stated, the count stays stated in every more specific caption
    assert (np.diff(counts.astype(int), axis=1) >= 0).all()


def test_wording_varies(dataset):
    _, data = dataset
    first_words = {s["tokens"][0] for im in data["images"] for s in im["sentences"]}
    words = {t for im in data["images"] for s in im["sentences"] for t in s["tokens"]}
    assert {"a", "there", "exactly", "only"} <= first_words
    assert {"big", "large", "little", "small", "middle", "centre", "thing", "shape"} <= words


def test_hierarchy_pairs_strictly_generalise(dataset):
    path, data = dataset
    pairs = shapes.hierarchy_pairs(path, split="test")
    test_images = [im for im in data["images"] if im["split"] == "test"]
    captions = [[s["raw"] for s in im["sentences"]] for im in test_images]
    own = {c for cs in captions for c in cs}
    images_with = {c: [k for k, cs in enumerate(captions) if c in cs] for c in own}
    assert len(pairs) == len(set(pairs))
    for general, specific in pairs:
        assert general != specific
        assert strictly_more_general(general, specific), (general, specific)
        # The generalisation is true of every image the specific caption describes.
        for k in images_with[specific]:
            assert holds(parse_caption(general), scene_of(test_images[k]))
    within = {(cs[i], cs[j]) for cs in captions for i, j in itertools.combinations(range(5), 2)}
    assert within <= set(pairs)
    constructed = [g for g, s in pairs if g not in own]
    assert len(constructed) > len(test_images)
    cross = [(g, s) for g, s in pairs if g in own and not set(images_with[g]) & set(images_with[s])]
    assert len(cross) > len(test_images) // 2

    sample = shapes.hierarchy_pairs(path, split="test", n_pairs=50, seed=1)
    assert len(sample) == 50 and len(set(sample)) == 50
    assert set(sample) <= set(shapes.hierarchy_pairs(path, split="test", seed=1))
    assert sample == shapes.hierarchy_pairs(path, split="test", n_pairs=50, seed=1)
    dev = shapes.hierarchy_pairs(path, split="dev")
    assert dev and all(strictly_more_general(g, s) for g, s in dev)


def test_bad_input(tmp_path, dataset):
    path, _ = dataset
    with pytest.raises(ValueError, match="image_size"):
        shapes.generate_shapes(tmp_path, n_train=1, image_size=8)
    with pytest.raises(ValueError, match="train"):
        shapes.generate_shapes(tmp_path, n_train=-1)
    with pytest.raises(ValueError, match="n_pairs"):
        shapes.hierarchy_pairs(path, n_pairs=10 ** 6)
    with pytest.raises(ValueError, match="no images"):
        shapes.hierarchy_pairs(path, split="restval")
    with pytest.raises(ValueError, match="not found"):
        shapes.hierarchy_pairs(tmp_path / "missing.json")


def test_hierarchy_pairs_by_kind(dataset):
    path, data = dataset
    by_kind = shapes.hierarchy_pairs_by_kind(path, split="test")
    assert list(by_kind) == list(shapes.PAIR_KINDS) and all(by_kind.values())
    everything = shapes.hierarchy_pairs(path, split="test")
    assert sum(map(len, by_kind.values())) == len(everything)
    assert {p for ps in by_kind.values() for p in ps} == set(everything)
    images = [[s["raw"] for s in im["sentences"]] for im in data["images"] if im["split"] == "test"]
    own = {(cs[i], cs[j]) for cs in images for i, j in itertools.combinations(range(5), 2)}
    assert set(by_kind["own captions"]) <= own <= set(everything)  # a pair drawn first as cross-image keeps that kind
    every_caption = {c for cs in images for c in cs}
    assert all(s in every_caption for _, s in by_kind["constructed"])
    assert all(g in every_caption and s in every_caption for g, s in by_kind["cross-image"])


def test_length_controlled_pairs(dataset):
    """Each pair: the general caption has at least as many words, is true of every test scene the specific one
    is true of, and is strictly more general by the truth checker; so the word-count rule is at most 50 %."""
    from order_embedding.data.shapes_truth import is_true_of, load_scenes, more_general
    from order_embedding.data.shapes_truth import parse_caption as claim_of

    path, data = dataset
    pairs = shapes.length_controlled_pairs(path, split="test")
    n_test = sum(im["split"] == "test" for im in data["images"])
    assert len(pairs) >= 0.8 * n_test and len(set(pairs)) == len(pairs)
    _, scenes = load_scenes(path, "test")
    own = {s["raw"] for im in data["images"] if im["split"] == "test" for s in im["sentences"]}
    for general, specific in pairs:
        assert specific in own and general != specific
        assert shapes.word_count(general) >= shapes.word_count(specific)
        g, s = claim_of(general), claim_of(specific)
        assert more_general(g, s) and not more_general(s, g)
        assert all(is_true_of(g, scene) for scene in scenes if is_true_of(s, scene))
    from order_embedding.demo import word_count_accuracy

    assert word_count_accuracy(pairs) <= 50.0
    # Several kinds of edit occur: a shape named by a general noun, a dropped count, an opening added.
    assert any(set(g.split()) & {"shape", "object", "thing"} - set(s.split()) for g, s in pairs)
    assert any(":" in s and ":" not in g for g, s in pairs)
    assert any(g.startswith(("an image of", "a picture of")) and not s.startswith(("an image", "a picture"))
               for g, s in pairs)
    assert pairs == shapes.length_controlled_pairs(path, split="test")


def test_word_count():
    assert shapes.word_count("exactly two shapes : a red star , a circle and a square") == 11
