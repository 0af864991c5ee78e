"""The generated entailment corpus, checked by a parser of its grammar written here from the grammar's
description, and a reasoner that enumerates the scenes a premise allows: nothing of the generator's code."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from order_embedding.entailment import (
    CorpusConfig,
    generate_corpus,
    read_snli,
    write_corpus,
)

SIZE = {"small": "small", "little": "small", "large": "large", "big": "large"}
COLOUR = {"red", "green", "blue", "yellow", "purple", "cyan"}
SHAPE = {"circle", "square", "triangle", "star", "cross"}
NOUN = {"shape", "object", "thing", "shapes", "objects"}
PLACE = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "centre": "centre", "middle": "centre"}
NUMBER = {"one": 1, "two": 2, "three": 3}
IGNORED = {"a", "an", "the", "on", "at", "near", "in", "there", "is", "picture", "image", "of", "exactly", "only",
           "total"}
DOMAIN = {"size": ("small", "large"), "colour": tuple(sorted(COLOUR)), "shape": tuple(sorted(SHAPE)),
          "position": ("left", "right", "top", "bottom", "centre")}


def parse(sentence: str) -> tuple[int | None, list[dict[str, str]]]:
    """(count or None, one attribute dict per object phrase) of a sentence of the grammar."""
    words = sentence.split()
    count = None
    if ":" in words:
        head, words = words[: words.index(":")], words[words.index(":") + 1:]
        numbers = [NUMBER[w] for w in head if w in NUMBER]
        assert len(numbers) == 1, sentence
        count = numbers[0]
    phrases: list[dict[str, str]] = [{}]
    for w in words:
        if w in (",", "and"):
            phrases.append({})
            continue
        d = phrases[-1]
        if w in SIZE:
            d["size"] = SIZE[w]
        elif w in COLOUR:
            d["colour"] = w
        elif w in SHAPE:
            d["shape"] = w
        elif w in PLACE:
            d["position"] = PLACE[w]
        else:
            assert w in NOUN or w in IGNORED, f"unknown word {w!r} in {sentence!r}"
    assert all(phrases), sentence
    return count, phrases


def worlds(premise: str) -> list[list[dict[str, str]]]:
    """Every scene the premise allows: it states the count and one phrase per object; unstated values are free,
    positions distinct."""
    count, phrases = parse(premise)
    assert count == len(phrases), premise
    free = [(k, a) for k, d in enumerate(phrases) for a in DOMAIN if a not in d]
    out = []
    for values in itertools.product(*(DOMAIN[a] for _, a in free)):
        scene = [dict(d) for d in phrases]
        for (k, a), v in zip(free, values):
            scene[k][a] = v
        if len({o["position"] for o in scene}) == len(scene):
            out.append(scene)
    return out


def true_of(hypothesis: str, scene: list[dict[str, str]]) -> bool:
    count, phrases = parse(hypothesis)
    if count is not None and count != len(scene):
        return False
    return any(all(all(scene[j][a] == v for a, v in d.items()) for d, j in zip(phrases, chosen))
               for chosen in itertools.permutations(range(len(scene)), len(phrases)))


def label(premise: str, hypothesis: str) -> str:
    truths = [true_of(hypothesis, w) for w in worlds(premise)]
    return "entailment" if all(truths) else "contradiction" if not any(truths) else "neutral"


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(CorpusConfig(train=150, dev=60, test=60, seed=3))


def test_every_label_agrees_with_the_independent_reasoner(corpus) -> None:
    n = 0
    for split, records in corpus.items():
        for r in records:
            assert label(r["sentence1"], r["sentence2"]) == r["gold_label"], (split, r)
            n += 1
    assert n > 1000


def _key(scene: list[dict[str, str]]) -> list[tuple]:
    return sorted(tuple(sorted(o.items())) for o in scene)


def test_premises_describe_their_scene_and_scenes_are_disjoint(corpus) -> None:
    scenes = {}
    for split, records in corpus.items():
        scenes[split] = {r["captionID"] for r in records}
        for r in records:
            scene = [dict(zip(("size", "colour", "shape", "position"), o.split())) for o in r["captionID"].split(";")]
            assert _key(scene) in [_key(w) for w in worlds(r["sentence1"])], r
            if r["gold_label"] != "neutral":
                assert true_of(r["sentence2"], scene) == (r["gold_label"] == "entailment"), r
    assert not scenes["train"] & scenes["dev"] and not scenes["train"] & scenes["test"] and not scenes["dev"] & scenes["test"]
    assert (len(scenes["train"]), len(scenes["dev"]), len(scenes["test"])) == (150, 60, 60)


def test_all_three_labels_are_well_represented(corpus) -> None:
    for records in corpus.values():
        counts = Counter(r["gold_label"] for r in records)
        assert set(counts) == {"entailment", "neutral", "contradiction"}
        assert min(counts.values()) / sum(counts.values()) > 0.2


def test_same_config_same_corpus_and_jsonl_round_trip(corpus, tmp_path) -> None:
    again = generate_corpus(CorpusConfig(train=150, dev=60, test=60, seed=3))
    assert again == corpus
    write_corpus(corpus, tmp_path)
    first = json.loads((tmp_path / "snli_1.0_test.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"gold_label", "sentence1", "sentence2", "pairID"}
    data = read_snli(tmp_path)
    for split in ("train", "dev", "test"):
        assert data[split].labels == [r["gold_label"] for r in corpus[split]]
        assert data[split].premises == [r["sentence1"] for r in corpus[split]]  # the tokeniser keeps these as they are
        assert data[split].hypotheses == [r["sentence2"] for r in corpus[split]]
