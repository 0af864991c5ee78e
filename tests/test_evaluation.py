"""Ranking metrics on hand-made error matrices, against a direct re-derivation."""
import numpy as np
import pytest

from order_embedding import evaluation as ev


def ref_t2i(E, c2i):
    return np.array([list(np.argsort(E[a], kind="stable")).index(c2i[a]) for a in range(len(E))])


def ref_i2t(E, c2i):
    out = []
    for b in range(E.shape[1]):
        order = list(c2i[np.argsort(E[:, b], kind="stable")])
        if b in order:
            out.append(order.index(b))
    return np.array(out)


def test_hand_made_ranks_and_ties():
    # 2 images, 2 captions each. Caption 0 ranks its image 0 first; caption 1 ties and loses the tie
    # to image 0 only if image 0 has the lower index (it is its own image, so rank 0).
    E = np.array([[0.1, 0.5],
                  [0.3, 0.3],   # tie: own image 0 comes first in stable order -> rank 0
                  [0.2, 0.2],   # tie: own image 1, image 0 wins the tie -> rank 1
                  [0.9, 0.4]])
    c2i = np.array([0, 0, 1, 1])
    np.testing.assert_array_equal(ev.ranks_t2i(E, c2i), [0, 0, 1, 0])
    # image 0 column: [0.1, 0.3, 0.2, 0.9] -> own captions 0,1 at positions 0, 2 -> best 0
    # image 1 column: [0.5, 0.3, 0.2, 0.4] -> order 2,1,3,0 -> own 2 at position 0
    np.testing.assert_array_equal(ev.ranks_i2t(E, c2i), [0, 0])


def test_metrics_definitions():
    ranks = np.array([0, 0, 3, 7, 12, 30])
    m = ev.recall_metrics(ranks)
    assert m["R@1"] == pytest.approx(100 * 2 / 6)
    assert m["R@5"] == pytest.approx(100 * 3 / 6)
    assert m["R@10"] == pytest.approx(100 * 4 / 6)
    assert m["medr"] == np.floor(np.median(ranks)) + 1 == 6.0
    assert m["meanr"] == pytest.approx(ranks.mean() + 1)


def test_random_matrices_variable_captions_both_directions():
    rng = np.random.default_rng(3)
    c2i = np.sort(rng.integers(0, 12, 40))
    E = rng.integers(0, 6, (40, 12)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(ev.ranks_t2i(E, c2i), ref_t2i(E, c2i))
    np.testing.assert_array_equal(ev.ranks_i2t(E, c2i), ref_i2t(E, c2i))


def test_default_five_captions_and_tuples():
    rng = np.random.default_rng(4)
    E = rng.random((25, 5))
    c2i = np.arange(25) // 5
    r = ref_t2i(E, c2i)
    assert ev.t2i(E) == pytest.approx((100 * np.mean(r < 1), 100 * np.mean(r < 5), 100 * np.mean(r < 10),
                                       np.floor(np.median(r)) + 1, r.mean() + 1))
    r = ref_i2t(E, c2i)
    assert ev.i2t(E)[0] == pytest.approx(100 * np.mean(r < 1))
    with pytest.raises(ValueError, match="not 5 per image"):
        ev.t2i(rng.random((7, 2)))


def test_blockwise_equals_whole():
    rng = np.random.default_rng(5)
    s, im = rng.random((53, 6)).astype(np.float32), rng.random((11, 6)).astype(np.float32)
    c2i = rng.integers(0, 11, 53)
    c2i[:11] = np.arange(11)
    def f(a, b):
        return np.round(-(a @ b.T), 1)  # coarse values: ties across blocks

    E = f(s, im)
    r1, r2 = ev.embedding_ranks(s, im, c2i, f, block_elements=40)
    np.testing.assert_array_equal(r1, ref_t2i(E, c2i))
    np.testing.assert_array_equal(r2, ref_i2t(E, c2i))
    lists = ev.retrieval_lists(s, im, c2i, "cosine", k=3, block_elements=40)
    E = -(s @ im.T)
    np.testing.assert_array_equal(lists["t2i"]["top"], np.argsort(E, 1, kind="stable")[:, :3])
    np.testing.assert_array_equal(lists["i2t"]["top"], np.argsort(E.T, 1, kind="stable")[:, :3])
    np.testing.assert_array_equal(lists["i2t"]["ranks"], ref_i2t(E, c2i))


def test_nan_is_never_a_hit():
    nan = np.nan
    # 3 images, 1 caption each (caption a belongs to image a)
    E = np.array([[nan, 0.2, 0.3],    # own error NaN: no rank inside 0..2 -> rank 3 (after everything)
                  [nan, 0.5, 0.1],    # a NaN elsewhere sorts last: own 0.5 is after 0.1 only -> rank 1
                  [nan, nan, nan]])   # everything NaN: still not a hit
    c2i = np.arange(3)
    np.testing.assert_array_equal(ev.ranks_t2i(E, c2i), [3, 1, 3])
    # R@5 and R@10 reach past the 3 images: every finite rank is a hit there, the NaN ones are not
    assert ev.t2i(E, c2i)[:3] == (0.0, pytest.approx(100 / 3), pytest.approx(100 / 3))
    assert ev.i2t(E, c2i)[:3] == (0.0, pytest.approx(100 / 3), pytest.approx(100 / 3))
    assert ev.recall_metrics(np.array([0, 3]), 3)["R@10"] == 50.0 and ev.recall_metrics(np.array([0, 2]), 3)["R@10"] == 100.0
    # image columns: image 0 [nan, nan, nan] -> its caption 0 is NaN -> rank 3 (after every caption)
    # image 1 [0.2, 0.5, nan] -> own caption 1 after caption 0 -> rank 1; image 2 [0.3, 0.1, nan] -> rank 3
    np.testing.assert_array_equal(ev.ranks_i2t(E, c2i), [3, 1, 3])


def test_nan_own_captions_in_image_to_text():
    nan = np.nan
    # image 0 has captions 0 and 1; caption 0's error is NaN, caption 1's is finite: the finite one counts
    E = np.array([[nan, 0.0],
                  [0.4, 0.1],
                  [0.3, 0.2],
                  [nan, 0.9]])
    c2i = np.array([0, 0, 1, 1])
    # column 0: [nan, 0.4, 0.3, nan] -> sorted 2, 1, then NaNs -> own caption 1 at rank 1
    # column 1: [0.0, 0.1, 0.2, 0.9] -> own captions 2, 3 at ranks 2, 3 -> best 2
    np.testing.assert_array_equal(ev.ranks_i2t(E, c2i), [1, 2])
    np.testing.assert_array_equal(ev.ranks_t2i(E, c2i), [2, 1, 0, 0])  # caption 3: the NaN image sorts last
    lists = ev.retrieval_lists(np.zeros((2, 1)), np.zeros((2, 1)), np.arange(2), "order", k=2)
    assert lists["t2i"]["ranks"].tolist() == [0, 1]  # finite ties as before


def test_nan_in_retrieval_lists_and_embedding_metrics():
    # cosine errors -(s . im): caption 0 is NaN, so its whole row is NaN
    s = np.array([[np.nan, 0.0], [1.0, 0.0]], dtype=np.float32)
    im = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # E = [[nan, nan], [-1, 0]]
    lists = ev.retrieval_lists(s, im, np.arange(2), "cosine", k=2)
    assert lists["t2i"]["ranks"].tolist() == [2, 1]
    assert lists["i2t"]["ranks"].tolist() == [2, 0]  # image 1: the NaN caption sorts after its own
    assert lists["i2t"]["top"].tolist() == [[1, 0], [1, 0]]  # NaN last in the top-k lists too
    m = ev.evaluate_embeddings(s, im, np.arange(2), "cosine")
    assert m["t2i"]["R@10"] == 50.0 and m["i2t"]["R@1"] == 50.0 and m["i2t"]["R@10"] == 50.0
