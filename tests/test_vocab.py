import json

import numpy as np
import pytest
from helpers import REAL_CAPTIONS, needs_real_captions

from order_embedding.options import OptionError
from order_embedding.vocab import EOS, UNK, Vocabulary


def test_build_orders_by_frequency_then_first_occurrence():
    caps = ["b a c", "a d", "c a e", "d"]
    # counts: a 3, b 1, c 2, d 2, e 1; ties c/d by first occurrence (c first), b/e (b first)
    v = Vocabulary.build(caps)
    assert v.words == ["a", "c", "d", "b", "e"]
    assert v.size == 7
    assert [v.index(w) for w in ["a", "c", "d", "b", "e"]] == [2, 3, 4, 5, 6]


def test_encode_maps_unknown_and_capped_words_to_one_without_eos():
    v = Vocabulary(["a", "c", "d", "b", "e"], n_words=5)
    assert v.size == 5
    # a->2, c->3, d->4, b has index 5 >= n_words -> 1, zzz unknown -> 1
    assert v.encode("a b zzz d c") == [2, UNK, UNK, 4, 3]
    assert v.encode("") == []
    assert EOS not in v.encode("a c d")


def test_n_words_larger_than_vocabulary_and_minimum():
    v = Vocabulary(["x", "y"], n_words=100)
    assert v.size == 4
    assert v.encode("y x") == [3, 2]
    v2 = Vocabulary(["x", "y"], n_words=2)
    assert v2.size == 2 and v2.encode("x y q") == [1, 1, 1]


def test_n_words_follows_the_whole_number_rule():
    v = Vocabulary(["x", "y"], n_words=np.int64(3))  # a NumPy count is stored as a plain int (JSON-able)
    assert type(v.n_words) is int and v.size == 3 and json.dumps(v.to_dict())
    for bad, message in ((1, "at least 2, got 1"), (3.0, "got 3.0"), (True, "got True"), ("3", "got '3'")):
        with pytest.raises(OptionError, match=f"n_words must be a whole number.*{message}"):
            Vocabulary(["x", "y"], n_words=bad)


def test_case_handling():
    sensitive = Vocabulary.build(["The dog", "the cat"])
    assert sensitive.words == ["The", "dog", "the", "cat"]
    assert sensitive.encode("THE dog") == [UNK, 3]
    lower = Vocabulary.build(["The dog", "the cat"], lowercase=True)
    assert lower.words == ["the", "dog", "cat"]
    assert lower.encode("THE Dog cat") == [2, 3, 4]


def test_word_and_decode_invert_encode():
    v = Vocabulary(["a", "b", "c"])
    ids = v.encode("c a b")
    assert [v.word(i) for i in ids] == ["c", "a", "b"]
    assert v.word(0) == "<eos>" and v.word(1) == "<unk>"
    assert v.decode(ids + [0, 2]) == "c a b"
    with pytest.raises(ValueError, match="outside"):
        v.word(5)


def test_save_load_roundtrip(tmp_path):
    v = Vocabulary.build(["x y z y", "z z"], n_words=4, lowercase=True)
    p = tmp_path / "run" / "vocab.json"
    v.save(p)
    assert json.loads(p.read_text()) == {"words": ["z", "y", "x"], "n_words": 4, "lowercase": True}
    w = Vocabulary.load(p)
    assert w == v and w.encode("x y z") == [UNK, 3, 2]
    assert not list(p.parent.glob("*.tmp"))


def test_load_accepts_words_only(tmp_path):
    p = tmp_path / "vocab.json"
    p.write_text(json.dumps({"words": ["a", "b"]}))
    v = Vocabulary.load(p)
    assert v.n_words is None and v.lowercase is False and v.size == 4


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "list \"words\""),
        ('{"words": "abc"}', "list \"words\""),
        ('{"words": ["a", 3]}', "word 1"),
        ('{"words": ["a", ""]}', "word 1"),
        ('{"words": ["a b"]}', "without whitespace"),
        ('{"words": ["a", "a"]}', "twice"),
        ('{"words": ["a"], "n_words": 1}', "n_words"),
        ('{"words": ["a"], "n_words": "5"}', "n_words"),
        ('{"words": ["a"], "n_words": true}', "n_words"),
        ('{"words": ["a"], "lowercase": "yes"}', "lowercase"),
        ('{"words": ["A"], "lowercase": true}', "not lowercase"),
        ('{"words": ["a"], "extra": 1}', "unexpected keys"),
    ],
)
def test_load_rejects_malformed_files(tmp_path, content, message):
    p = tmp_path / "vocab.json"
    p.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        Vocabulary.load(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Vocabulary.load(tmp_path / "nope.json")


@needs_real_captions
def test_real_captions_match_independent_count():
    lines = REAL_CAPTIONS.read_text(encoding="utf-8").splitlines()[:2000]
    v = Vocabulary.build(lines, n_words=500)
    # independent re-derivation: plain dict counts, first position of each word
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    pos = 0
    for line in lines:
        for w in line.split():
            counts[w] = counts.get(w, 0) + 1
            first.setdefault(w, pos)
            pos += 1
    expected = sorted(counts, key=lambda w: (-counts[w], first[w]))
    assert v.words == expected
    assert v.size == 500
    ids = v.encode(lines[0])
    assert ids == [expected.index(w) + 2 if expected.index(w) + 2 < 500 else 1 for w in lines[0].split()]
