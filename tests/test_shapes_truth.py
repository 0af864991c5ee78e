"""The caption truth checker against the generator's recorded facts, hand-made scenes, and precision@10."""
import json

import numpy as np
import pytest

from order_embedding.data import shapes
from order_embedding.data.shapes_truth import is_true_of, load_scenes, parse_caption, truth_matrix
from order_embedding.demo import precision_at_10


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = shapes.generate_shapes(tmp_path_factory.mktemp("truth"), n_train=0, n_dev=0, n_test=60, seed=3,
                                  image_size=32, verbose=False)
    return path, json.loads(path.read_text())["images"]


def true_by_facts(caption_facts: dict, scene_entry: dict) -> bool:
    """The generator's own semantics: the scene's full description (caption 5) implies the caption."""
    return shapes.entails(scene_entry["caption_facts"][4], caption_facts)


def test_every_caption_agrees_with_the_generators_facts_on_every_scene(world):
    _, entries = world
    agree = checked = true = 0
    for a in entries:
        for sentence, facts in zip(a["sentences"], a["caption_facts"]):
            claim = parse_caption(sentence["raw"])
            assert is_true_of(claim, a["objects"]), sentence["raw"]  # a caption is true of its own image
            for b in entries:
                mine, theirs = is_true_of(claim, b["objects"]), true_by_facts(facts, b)
                agree += mine == theirs
                true += theirs
                checked += 1
    assert agree == checked and 0 < true < checked  # 60 x 300 pairs, true and false ones


def test_hand_made_scenes():
    red_circle = {"shape": "circle", "colour": "red", "size": "large", "position": "left"}
    blue_star = {"shape": "star", "colour": "blue", "size": "small", "position": "top"}
    scene = [red_circle, blue_star]
    for text, expected in [
        ("a red shape", True),
        ("a picture of a big red circle on the left", True),
        ("a little thing near the top", True),
        ("a red shape and a red thing", False),  # two phrases need two different objects
        ("a red circle and a blue star", True),
        ("exactly two shapes : a large red circle on the left and a small blue star at the top", True),
        ("only one object : a red circle", False),  # the count is wrong
        ("three shapes in total : a red circle , a blue star and a shape", False),
        ("a red circle in the middle", False),
        ("there is a green object", False),
        ("exactly two shapes", True),  # the count alone
        ("only one object", False),
        ("three objects in total", False),
    ]:
        assert is_true_of(parse_caption(text), scene) == expected, text
    with pytest.raises(ValueError, match="unknown word 'dog'"):
        parse_caption("a red dog")


def test_precision_at_10_against_a_direct_computation(world):
    path, entries = world
    captions, scenes = load_scenes(path, "test")
    assert len(captions) == 300 and len(scenes) == 60
    facts = [f for im in entries for f in im["caption_facts"]]
    cap2img = np.repeat(np.arange(60), 5)
    rng = np.random.default_rng(0)
    s, im = rng.random((300, 8)).astype(np.float32), rng.random((60, 8)).astype(np.float32)
    # order errors computed directly; each caption's 10 best images, ties to the lower index
    errors = (np.maximum(0, s[:, None, :] - im[None, :, :]) ** 2).sum(-1)
    share = np.array([np.mean([true_by_facts(facts[c], entries[j]) for j in np.argsort(errors[c], kind="stable")[:10]])
                      for c in range(300)])
    place = np.arange(300) % 5
    got = precision_at_10(s, im, "order", truth_matrix(captions, scenes), cap2img)
    assert got["all"] == pytest.approx(100 * share.mean())
    assert got["general"] == pytest.approx(100 * share[place < 2].mean())
    assert got["specific"] == pytest.approx(100 * share[place >= 3].mean())


def test_truth_matrix_is_the_checker_on_every_pair(world):
    path, _ = world
    captions, scenes = load_scenes(path, "test")
    expected = np.array([[is_true_of(parse_caption(c), s) for s in scenes] for c in captions])
    got = truth_matrix(captions, scenes)
    assert got.shape == (300, 60) and np.array_equal(got, expected) and 0 < got.mean() < 1


@pytest.mark.parametrize("general, specific, expected", [
    ("a shape", "a red star", True),
    ("a red star", "a shape", False),
    ("a red star", "a red star", False),  # not strictly
    ("there is a red star", "a picture of a red star", False),  # the same facts in other words
    ("a red object", "a red star and a blue circle", True),
    ("exactly two shapes : a star", "a star and a circle", False),  # the count is not stated
    ("two shapes in total : a star", "exactly two objects : a red star and a circle", True),
    ("a thing", "exactly one shape", True),  # every scene has an object, not every one exactly one
    ("a thing", "there is a shape", False),  # both true of every scene
    ("a star and a shape", "a star", False),  # two objects are not implied by one
    ("a star , a circle and a square", "exactly three shapes : a star , a circle and a square", False),
    ("a big star on the left", "a large red star at the left", True),
])
def test_more_general_on_hand_made_pairs(general, specific, expected):
    from order_embedding.data.shapes_truth import more_general

    assert more_general(parse_caption(general), parse_caption(specific)) is expected


def test_more_general_against_every_small_scene():
    """On captions about one object, the answer is that of every scene of one object, enumerated directly."""
    import itertools

    from order_embedding.data.shapes_truth import more_general

    scenes = [[dict(zip(("shape", "colour", "size", "position"), values))]
              for values in itertools.product(shapes.SHAPES, shapes.COLOURS, shapes.SIZES, shapes.POSITIONS)]
    captions = ["exactly one shape : a red thing", "a red star", "a star", "there is a small red shape",
                "a red star on the left", "a thing on the left", "exactly one object : a big star"]
    for g, s in itertools.permutations(captions, 2):
        gc, sc = parse_caption(g), parse_caption(s)
        truth_g = np.array([is_true_of(gc, x) for x in scenes])
        truth_s = np.array([is_true_of(sc, x) for x in scenes])
        # Every caption here is about one object and states the count 1 or is true of some one-object scene,
        # so one-object scenes decide whenever the specific caption states the count 1.
        if sc.count == 1:
            assert more_general(gc, sc) == bool(truth_g[truth_s].all() and (truth_g & ~truth_s).any()), (g, s)
