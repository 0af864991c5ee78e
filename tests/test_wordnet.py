"""WordNet reading, closure, split and negatives, on hand-made database files and on WordNet 3.0."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from wordnet_files import TINY, TINY_CLOSURE, TINY_EDGES, TINY_NAMES, write_wordnet

from order_embedding.hypernym.wordnet import (
    WordNetError,
    build_dataset,
    contains_edges,
    corrupt_edges,
    read_wordnet,
    transitive_closure,
)

WORDNET = Path("/usr/share/wordnet")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    write_wordnet(tmp_path / "wn", TINY)
    return tmp_path / "wn"


def as_set(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edges}


def test_reads_synsets_names_and_hypernym_edges(tiny: Path) -> None:
    g = read_wordnet(tiny)
    assert g.names == TINY_NAMES
    assert g.n_nodes == len(TINY)
    assert as_set(g.edges) == TINY_EDGES  # '~', '#m' and '+' pointers ignored, '@' and '@i' kept
    assert len(g.edges) == len(TINY_EDGES)
    assert g.node("dog.n.01") == 3 and g.node("frump.n.01") == 8
    assert g.node(f"{g.offsets[5]:08d}") == 5
    with pytest.raises(ValueError, match="dog.n.03"):
        g.node("dog.n.03")


def test_accepts_a_dict_subfolder(tmp_path: Path) -> None:
    write_wordnet(tmp_path / "WordNet-3.0" / "dict", TINY)
    assert read_wordnet(tmp_path / "WordNet-3.0").names == TINY_NAMES


def test_closure_matches_hand_computed(tiny: Path) -> None:
    g = read_wordnet(tiny)
    closure = transitive_closure(g.edges, g.n_nodes)
    assert as_set(closure) == TINY_CLOSURE
    assert len(closure) == len(TINY_CLOSURE)
    assert (np.diff(closure[:, 0] * g.n_nodes + closure[:, 1]) > 0).all()  # sorted, unique


def test_closure_matches_boolean_matrix_powers() -> None:
    rng = np.random.default_rng(3)
    n = 60
    a, b = rng.integers(0, n, (2, 150))
    edges = np.stack([np.maximum(a, b), np.minimum(a, b)], axis=1)  # lower index above: acyclic
    edges = edges[edges[:, 0] != edges[:, 1]]
    reach = np.zeros((n, n), dtype=bool)
    reach[edges[:, 0], edges[:, 1]] = True
    for _ in range(n):
        reach = reach | ((reach.astype(int) @ reach.astype(int)) > 0)
    assert as_set(transitive_closure(edges, n)) == {(int(i), int(j)) for i, j in zip(*np.nonzero(reach))}


def test_closure_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        transitive_closure(np.array([[0, 1], [1, 2], [2, 0]]), 3)


def test_descendants_keep_the_subtree_and_its_edges(tiny: Path) -> None:
    sub = read_wordnet(tiny).descendants("mammal.n.01")
    assert sub.names == ["mammal.n.01", "dog.n.01", "fido.n.01"]
    assert as_set(sub.edges) == {(1, 0), (2, 1)}  # dog -> pet leaves the subtree


def test_split_sizes_are_disjoint_and_cover_the_closure(tiny: Path) -> None:
    g = read_wordnet(tiny)
    d = build_dataset(g, seed=5, dev_size=3, test_size=2)
    assert (len(d.test), len(d.dev), len(d.train)) == (2, 3, len(TINY_CLOSURE) - 5)
    parts = [as_set(d.test), as_set(d.dev), as_set(d.train)]
    assert sum(len(p) for p in parts) == len(TINY_CLOSURE)
    assert set().union(*parts) == TINY_CLOSURE
    again = build_dataset(g, seed=5, dev_size=3, test_size=2)
    assert np.array_equal(again.test, d.test) and np.array_equal(again.dev_negatives, d.dev_negatives)
    others = [build_dataset(g, seed=s, dev_size=3, test_size=2).test for s in range(6, 12)]
    assert any(not np.array_equal(o, d.test) for o in others)
    with pytest.raises(ValueError, match="too few"):
        build_dataset(g, seed=0, dev_size=10, test_size=len(TINY_CLOSURE) - 10)


def test_negatives_replace_exactly_one_end_by_a_random_node() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    pos = rng.integers(0, n, (5000, 2))
    neg = corrupt_edges(pos, n, np.random.default_rng(1))
    assert neg.shape == pos.shape and neg.min() >= 0 and neg.max() < n
    kept_lower, kept_upper = neg[:, 0] == pos[:, 0], neg[:, 1] == pos[:, 1]
    assert (kept_lower | kept_upper).all()  # never both ends replaced
    changed_lower, changed_upper = (~kept_lower).mean(), (~kept_upper).mean()
    assert 0.45 < changed_lower < 0.55 and 0.45 < changed_upper < 0.55  # each end about half the time


def test_negatives_can_avoid_known_edges() -> None:
    rng = np.random.default_rng(4)
    n = 12
    pos = np.array([[a, b] for a in range(n) for b in range(n) if a > b and (a + b) % 3])  # dense known set
    neg = corrupt_edges(pos, n, rng, exclude=pos)
    assert ((pos[:, 0] == neg[:, 0]) | (pos[:, 1] == neg[:, 1])).all()
    assert not contains_edges(pos, neg, n).any()
    assert contains_edges(pos, corrupt_edges(pos, n, rng), n).any()  # without exclude they do occur


def test_dataset_negatives_follow_their_positives(tiny: Path) -> None:
    d = build_dataset(read_wordnet(tiny), seed=1, dev_size=4, test_size=4)
    for pos, neg in ((d.dev, d.dev_negatives), (d.test, d.test_negatives)):
        assert ((pos[:, 0] == neg[:, 0]) | (pos[:, 1] == neg[:, 1])).all()


def test_contains_edges(tiny: Path) -> None:
    known = np.array([[1, 0], [3, 2]])
    assert contains_edges(known, np.array([[3, 2], [2, 3], [1, 0], [0, 1]]), 9).tolist() == [True, False, True, False]


# ---- bad input -------------------------------------------------------------------------------


def test_missing_folder_says_where_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(WordNetError, match="not found.*wordnet-base"):
        read_wordnet(tmp_path / "nowhere")


def test_folder_without_data_noun(tmp_path: Path) -> None:
    with pytest.raises(WordNetError, match="no data.noun.*wordnet-base"):
        read_wordnet(tmp_path)


def test_a_file_instead_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(WordNetError, match="not a folder"):
        read_wordnet(tmp_path / "f")


def test_missing_index(tiny: Path) -> None:
    (tiny / "index.noun").unlink()
    with pytest.raises(WordNetError, match="index.noun: file not found.*wordnet-base"):
        read_wordnet(tiny)


def test_unreadable_data_file(tiny: Path) -> None:
    (tiny / "data.noun").unlink()
    (tiny / "data.noun").mkdir()
    with pytest.raises(WordNetError, match="data.noun: is a folder"):
        read_wordnet(tiny)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: "hello, this is not WordNet\n", r"data.noun:1: not in the WordNet database format.*offset"),
        (lambda t: t.replace(" | gloss of entity", " gloss of entity"), r"expected .*\| gloss"),
        (lambda t: t.replace(" 03 n 02 animal", " 03 v 02 animal"), "not a noun"),
        (lambda t: t.replace(" 03 n 02 animal", " 03 n 03 animal"), "word count 03 wrong"),
        (lambda t: t.replace(" 03 n 02 animal", " 03 n 09 animal"), "word count 09 does not match"),
        (lambda t: t.replace(" 002 @ ", " 003 @ ", 1), "pointer count"),
        (lambda t: "  1 licence only\n", "no synsets found"),
        (lambda t: "x" + t, "not in the WordNet database format"),
    ],
)
def test_malformed_data_noun(tiny: Path, edit, message: str) -> None:
    path = tiny / "data.noun"
    path.write_text(edit(path.read_text()))
    with pytest.raises(WordNetError, match=message) as e:
        read_wordnet(tiny)
    assert "wordnet-base" in str(e.value)


def test_wrong_offset_is_caught(tiny: Path) -> None:
    path = tiny / "data.noun"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("gloss of entity", "gloss of entity, longer")  # shifts all later offsets
    path.write_text("".join(lines))
    with pytest.raises(WordNetError, match="is not the line's byte offset"):
        read_wordnet(tiny)


def test_pointer_to_a_missing_synset(tiny: Path) -> None:
    path = tiny / "data.noun"
    text = path.read_text()
    first_pointer = text.split(" @ ", 1)[1][:8]
    path.write_text(text.replace(f" @ {first_pointer} n", " @ 99999999 n", 1))
    with pytest.raises(WordNetError, match="missing synset 99999999"):
        read_wordnet(tiny)


def test_index_without_a_lemma(tiny: Path) -> None:
    path = tiny / "index.noun"
    path.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("pet ")))
    with pytest.raises(WordNetError, match="lemma 'pet'"):
        read_wordnet(tiny)


def test_malformed_index(tiny: Path) -> None:
    path = tiny / "index.noun"
    path.write_text(path.read_text().replace("pet n 1 1 @ 1 0", "pet n 2 1 @ 1 0"))
    with pytest.raises(WordNetError, match=r"index.noun:\d+: not in the WordNet database format"):
        read_wordnet(tiny)


# ---- WordNet 3.0 (Debian's wordnet-base) -----------------------------------------------------


@pytest.fixture(scope="module")
def wordnet():
    return read_wordnet(WORDNET)


@pytest.mark.system_packages("wordnet-base")
def test_wordnet_30_counts(wordnet) -> None:
    # Published sizes of WordNet 3.0's noun hierarchy (reference section 7).
    assert wordnet.n_nodes == 82115
    assert len(wordnet.edges) == 84427
    assert len(transitive_closure(wordnet.edges, wordnet.n_nodes)) == 743241


@pytest.mark.system_packages("wordnet-base")
def test_wordnet_30_names_and_offsets(wordnet) -> None:
    # Offsets of well-known synsets in WordNet 3.0 (as NLTK reports them).
    assert wordnet.offsets[wordnet.node("entity.n.01")] == 1740
    assert wordnet.offsets[wordnet.node("dog.n.01")] == 2084071
    assert wordnet.offsets[wordnet.node("mammal.n.01")] == 1861778
    dog, canine = wordnet.node("dog.n.01"), wordnet.node("canine.n.02")
    assert [dog, canine] in wordnet.edges.tolist()
    mammals = wordnet.descendants("mammal.n.01")
    assert "dog.n.01" in mammals.names and "bird.n.01" not in mammals.names
