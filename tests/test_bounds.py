"""The 7-bit lower bound and the exact search that skips images with it, against NumPy and the full scan."""
import json

import numpy as np
import pytest
from helpers import order_penalty
from test_index import QUERIES, make_features, make_run

from order_embedding.index import BOUNDS, META, Index, IndexFileError, build_index
from order_embedding.inference import encode_sentences
from order_embedding.kernels import bounds, order_topk

needs_vnni = pytest.mark.skipif(not bounds.supported(), reason="the bound kernel needs AVX-512 BW and VNNI")


def numpy_errors(s, im):
    return order_penalty(s, im)


def clustered(rng, n, dim, clusters=20, dtype=np.float16):
    """Non-negative unit rows around a few centres, like order embeddings of images."""
    centres = np.abs(rng.standard_normal((clusters, dim)))
    x = np.abs(centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def test_levels_round_images_up_and_queries_down_into_0_127():
    step = 0.25  # a power of two: x / step is exact
    x = np.array([[0.0, 0.3, 0.7, 1.0, 31.9, 40.0, -0.3, np.nan, np.inf]])
    up = bounds.image_levels(x, step)
    down = bounds.query_levels(x, step)
    assert up.shape == down.shape == (1, 64) and up.dtype == np.uint8
    # Exact multiples of the step go one level up / down: float32 division may land on either side.
    assert up[0, :9].tolist() == [1, 2, 3, 5, 127, 127, 0, 0, 127]
    assert down[0, :9].tolist() == [0, 1, 2, 3, 127, 127, 0, 0, 127]
    assert not up[0, 9:].any() and not down[0, 9:].any()
    rng = np.random.default_rng(0)
    v = rng.uniform(0, 0.1, (50, 30))
    step = 0.1 / 127
    assert (bounds.image_levels(v, step)[:, :30] >= np.minimum(v / step, 127)).all()
    assert (bounds.query_levels(v, step)[:, :30] <= v / step).all()


def test_step_maps_a_high_quantile_to_the_top_level():
    x = np.linspace(0.001, 1, 100001)[None, :]
    assert bounds.bound_step(x) == pytest.approx(np.quantile(x, bounds.QUANTILE) / 127, rel=1e-6)
    assert bounds.bound_step(np.zeros((3, 4))) == 1.0


@needs_vnni
@pytest.mark.parametrize("width", [64, 192])
def test_bound_matrix_is_the_integer_formula(width):
    rng = np.random.default_rng(0)
    s8 = rng.integers(0, 128, (7, width), dtype=np.uint8)
    im8 = rng.integers(0, 128, (10, width), dtype=np.uint8)
    expected = (np.maximum(0, s8[:, None, :].astype(np.int64) - im8[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(bounds.bound_matrix(s8, im8), expected)


@needs_vnni
def test_bound_never_exceeds_the_penalty():
    rng = np.random.default_rng(1)
    im = np.abs(rng.standard_normal((300, 70))) * 0.2
    s = rng.standard_normal((9, 70)) * 0.2  # signed
    s[0, :3] = 2.0  # above the clipped range
    step = bounds.bound_step(im)
    assert (im > 127 * step).any() and (s > 127 * step).any()
    lower = bounds.bound_matrix(bounds.query_levels(s, step), bounds.image_levels(im, step)) * step**2
    exact = numpy_errors(s, im)
    assert (lower <= exact).all()
    assert (lower > 0.5 * exact).mean() > 0.5  # and it is not vacuous


@needs_vnni
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("k", [1, 7])
def test_bounded_topk_is_the_full_scan_result(dtype, k):
    rng = np.random.default_rng(2)
    im = clustered(rng, bounds.MIN_IMAGES + 333, 40, dtype=dtype)  # large enough for the starting sample
    im[1000:1010] = im[5]  # ties broken by the lower index
    im[20000] = np.nan  # NaN rows count as +inf
    q = np.abs(np.asarray(im[rng.choice(len(im), 11)], np.float32) + 0.05 * rng.standard_normal((11, 40)))
    q[0] = im[5]
    levels = bounds.image_levels(im, bounds.bound_step(im[:5000]))
    stats = {}
    e, i = bounds.order_topk_bounded(q, im, levels, bounds.bound_step(im[:5000]), k, stats=stats)
    e_full, i_full = order_topk(q, im, k)
    np.testing.assert_array_equal(i, i_full)
    np.testing.assert_array_equal(e, e_full)
    assert stats["scored_pairs"] < 0.1 * stats["pairs"]  # most images were skipped
    assert set(i[0]) <= {5, *range(1000, 1010)}


@needs_vnni
def test_bounded_topk_small_cases_match_numpy():
    rng = np.random.default_rng(3)
    im = clustered(rng, 50, 9, dtype=np.float32)
    q = np.abs(rng.standard_normal((6, 9))).astype(np.float32) * 0.3
    q[1] = np.nan
    step = bounds.bound_step(im)
    e, i = bounds.order_topk_bounded(q, im, bounds.image_levels(im, step), step, 60)
    assert e.shape == (6, 50)
    exact = numpy_errors(q, im)
    exact[np.isnan(exact)] = np.inf
    order = np.argsort(exact, axis=1, kind="stable")
    np.testing.assert_array_equal(i, order)
    np.testing.assert_allclose(e, np.take_along_axis(exact, order, 1), rtol=1e-5)


@needs_vnni
def test_bounded_topk_rejects_mismatched_bounds():
    im = np.ones((10, 8), np.float32)
    with pytest.raises(ValueError, match="bounds of shape"):
        bounds.order_topk_bounded(np.ones((2, 8)), im, np.zeros((10, 8), np.uint8), 0.01, 3)
    with pytest.raises(ValueError, match="step"):
        bounds.order_topk_bounded(np.ones((2, 8)), im, np.zeros((10, 64), np.uint8), 0.0, 3)


def test_index_stores_bounds_and_search_matches_the_full_scan(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    make_features(tmp_path / "f.npy", n=500)
    out = build_index(run, tmp_path / "f.npy", tmp_path / "idx")
    meta = json.loads((out / META).read_text())
    stored = np.load(out / "embeddings.npy")
    levels = np.load(out / BOUNDS)
    np.testing.assert_array_equal(levels, bounds.image_levels(stored, meta["bounds"]["step"]))
    index = Index(out)
    q = encode_sentences(index.model(), [" ".join(QUERIES)] + QUERIES)
    e_b, i_b = index.search_vectors(q, k=5)
    e_f, i_f = index.search_vectors(q, k=5, bounds=False)
    np.testing.assert_array_equal(i_b, i_f)
    np.testing.assert_array_equal(e_b, e_f)
    assert index.bounded() == bounds.supported()
    monkeypatch.setattr(bounds, "supported", lambda: False)
    assert not Index(out).bounded()
    np.testing.assert_array_equal(Index(out).search_vectors(q, k=5)[1], i_f)


def test_cosine_index_has_no_bounds(tmp_path):
    out = build_index(make_run(tmp_path / "run", "cosine"), make_features(tmp_path / "f.npy"), tmp_path / "idx")
    assert not (out / BOUNDS).exists() and not Index(out).bounded()


def test_index_refuses_bad_bounds(tmp_path):
    out = build_index(make_run(tmp_path / "run"), make_features(tmp_path / "f.npy"), tmp_path / "idx")
    np.save(out / BOUNDS, np.zeros((3, 64), np.uint8))
    with pytest.raises(IndexFileError, match="bounds.npy"):
        Index(out)
    meta = json.loads((out / META).read_text())
    meta["bounds"]["step"] = -1.0
    (out / META).write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="step"):
        Index(out)
