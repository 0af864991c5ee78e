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
    f = lambda a, b: np.round(-(a @ b.T), 1)  # coarse values: ties across blocks
    E = f(s, im)
    r1, r2 = ev.embedding_ranks(s, im, c2i, f, block_elements=40)
    np.testing.assert_array_equal(r1, ref_t2i(E, c2i))
    np.testing.assert_array_equal(r2, ref_i2t(E, c2i))
    lists = ev.retrieval_lists(s, im, c2i, "cosine", k=3, block_elements=40)
    E = -(s @ im.T)
    np.testing.assert_array_equal(lists["t2i"]["top"], np.argsort(E, 1, kind="stable")[:, :3])
    np.testing.assert_array_equal(lists["i2t"]["top"], np.argsort(E.T, 1, kind="stable")[:, :3])
    np.testing.assert_array_equal(lists["i2t"]["ranks"], ref_i2t(E, c2i))
