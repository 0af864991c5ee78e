"""The blockwise order-violation kernels against a direct float64 NumPy formula and hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import order_penalty as direct
from helpers import stable_topk

from order_embedding import measures
from order_embedding.kernels import cpu as kernels
from order_embedding.kernels import order_error_matrix, order_topk


def direct_topk(s: np.ndarray, im: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return stable_topk(direct(s, im), k)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = np.abs(rng.standard_normal((n, dim))).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6 * scale)


# ---------------------------------------------------------------- error matrix


@pytest.mark.parametrize("n, m, dim", [(1, 1, 1), (3, 5, 7), (4, 4, 16), (9, 130, 33), (17, 6, 1024), (8, 300, 64)])
def test_matrix_matches_direct_formula(n: int, m: int, dim: int) -> None:
    rng = np.random.default_rng(n * 1000 + m + dim)
    s, im = unit_rows(rng, n, dim), unit_rows(rng, m, dim)
    errors = order_error_matrix(s, im)
    assert errors.dtype == np.float32 and errors.flags.c_contiguous
    assert_close(errors, direct(s, im))


def test_matrix_hand_made() -> None:
    s = np.array([[1.0, 2.0], [0.0, 0.0], [0.5, 3.0]], dtype=np.float32)
    im = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, 1.0]], dtype=np.float32)
    # s0-im0 = (1, 2) -> 5; s0-im1 = (0, -1) -> 0; s0-im2 = (-1, 1) -> 1
    # s1 is the origin: below everything -> 0
    # s2-im0 = (0.5, 3) -> 9.25; s2-im1 = (-0.5, 0) -> 0; s2-im2 = (-1.5, 2) -> 4
    expected = np.array([[5.0, 0.0, 1.0], [0.0, 0.0, 0.0], [9.25, 0.0, 4.0]], dtype=np.float32)
    np.testing.assert_array_equal(order_error_matrix(s, im), expected)


def test_matrix_exact_zero_where_order_holds() -> None:
    rng = np.random.default_rng(1)
    im = unit_rows(rng, 10, 50)
    s = im * rng.uniform(0.0, 1.0, size=(10, 1)).astype(np.float32)  # each s[a] <= im[a] coordinatewise
    errors = order_error_matrix(s, im)
    assert np.all(np.diag(errors) == 0.0)
    assert np.all(errors >= 0.0)
    assert_close(errors, direct(s, im))


def test_matrix_any_dtype_and_layout() -> None:
    rng = np.random.default_rng(2)
    s64 = rng.random((12, 40))
    im64 = rng.random((40, 9)).T  # Fortran-ordered view
    expected = direct(s64.astype(np.float32), im64.astype(np.float32))
    assert_close(order_error_matrix(s64, im64), expected)
    wide = rng.random((9, 80)).astype(np.float32)
    assert_close(order_error_matrix(s64[::2], wide[:, ::2]), direct(s64[::2].astype(np.float32), wide[:, ::2]))
    s16, im16 = s64.astype(np.float16), im64.astype(np.float16)
    assert_close(order_error_matrix(s16, im16), direct(s16, im16))
    ints = np.arange(12).reshape(3, 4)
    assert_close(order_error_matrix(ints, ints[::-1]), direct(ints, ints[::-1]))
    read_only = s64.astype(np.float32)
    read_only.flags.writeable = False
    assert_close(order_error_matrix(read_only, read_only), direct(read_only, read_only))


def test_matrix_empty_inputs() -> None:
    assert order_error_matrix(np.zeros((0, 5)), np.ones((3, 5))).shape == (0, 3)
    assert order_error_matrix(np.zeros((4, 5)), np.ones((0, 5))).shape == (4, 0)
    np.testing.assert_array_equal(order_error_matrix(np.zeros((2, 0)), np.zeros((3, 0))), np.zeros((2, 3)))


def test_matrix_bad_input() -> None:
    with pytest.raises(ValueError, match="dimension 4 but images have dimension 5"):
        order_error_matrix(np.zeros((2, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="2-D"):
        order_error_matrix(np.zeros(4), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="real numbers"):
        order_error_matrix(np.zeros((2, 4), dtype=complex), np.zeros((3, 4)))


def test_matrix_nan_propagates() -> None:
    s = np.ones((4, 3), dtype=np.float32)
    im = np.zeros((5, 3), dtype=np.float32)
    im[2, 1] = np.nan
    errors = order_error_matrix(s, im)
    assert np.all(np.isnan(errors[:, 2]))
    np.testing.assert_array_equal(np.delete(errors, 2, axis=1), np.full((4, 4), 3.0, dtype=np.float32))


def test_measures_uses_the_kernel_for_numpy() -> None:
    rng = np.random.default_rng(3)
    s, im = unit_rows(rng, 7, 20), unit_rows(rng, 6, 20)
    from_numpy = measures.order_errors(s, im)
    from_torch = measures.order_errors(torch.from_numpy(s), torch.from_numpy(im))
    assert isinstance(from_numpy, np.ndarray)
    np.testing.assert_array_equal(from_numpy, order_error_matrix(s, im))
    assert_close(from_numpy, from_torch.numpy().astype(np.float64))


# ---------------------------------------------------------------- top-k


@pytest.mark.parametrize("n,m,dim", [(1, 1, 1), (5, 9, 13), (37, 21, 70)])
def test_gradients_match_direct_formula(n: int, m: int, dim: int) -> None:
    rng = np.random.default_rng(n + m + dim)
    s = rng.random((n, dim), dtype=np.float32)
    im = rng.random((m, dim), dtype=np.float32)
    g = rng.standard_normal((n, m)).astype(np.float32)
    g[rng.random((n, m)) < 0.5] = 0  # inactive hinges
    d = np.maximum(0.0, s[:, None, :].astype(np.float64) - im[None, :, :])
    grad_s, grad_im = kernels.order_error_grads(s, im, g)
    np.testing.assert_allclose(grad_s, 2 * np.einsum("ab,abi->ai", g, d), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_im, -2 * np.einsum("ab,abi->bi", g, d), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="weights of shape"):
        kernels.order_error_grads(s, im, g.T if n != m else g[:, :0])


def test_gradients_by_hand() -> None:
    s = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    im = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)
    g = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    # E[0,0] = 1 -> d/ds0 = (2, 0); E[1,1] = 0.25 (only coordinate 0 violates) weighted 2 -> (2, 0)
    grad_s, grad_im = kernels.order_error_grads(s, im, g)
    np.testing.assert_array_equal(grad_s, [[2.0, 0.0], [2.0, 0.0]])
    np.testing.assert_array_equal(grad_im, [[-2.0, 0.0], [-2.0, 0.0]])


@pytest.mark.parametrize("n, m, dim, k", [(1, 1, 3, 1), (3, 50, 8, 5), (6, 1000, 33, 10), (5, 300, 16, 300)])
def test_topk_matches_direct_formula(n: int, m: int, dim: int, k: int) -> None:
    rng = np.random.default_rng(n + m + dim + k)
    s, im = unit_rows(rng, n, dim), unit_rows(rng, m, dim)
    errors, indices = order_topk(s, im, k)
    expected_errors, expected_indices = direct_topk(s, im, k)
    assert errors.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected_indices)
    assert_close(errors, expected_errors)


def test_topk_ties_lower_index_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # Errors are small dyadic numbers, exact in float32; equal ones repeat across blocks and parts.
    monkeypatch.setattr(kernels, "TOPK_BLOCK_BYTES", 4 * 4 * 700)  # 700 images per kernel call
    values = np.array([0.0, 0.5, 0.25, 1.0], dtype=np.float32)
    pattern = np.array([3, 1, 2, 1, 0, 3, 2, 0])
    im = np.tile(values[pattern][:, None], (375, 4)).astype(np.float32)  # 3000 images of 4 equal coordinates
    s = np.full((2, 4), 1.0, dtype=np.float32)
    s[1] = 0.5
    errors, indices = order_topk(s, im, 1000)
    expected_errors, expected_indices = direct_topk(s, im, 1000)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(errors, expected_errors.astype(np.float32))
    # Caption 0 (all 1.0) is above only the 750 images at 1.0 (pattern positions 0 and 5);
    # next come the images at 0.5 (positions 1 and 3) with error 4 * 0.5^2, in index order.
    assert np.all(errors[0, :750] == 0.0) and list(indices[0, :3]) == [0, 5, 8]
    assert errors[0, 750] == 1.0 and list(indices[0, 750:753]) == [1, 3, 9]
    # Caption 1 (all 0.5) is above the 1500 images at 0.5 or 1.0: the first 1000 of them, in order.
    at_least_half = np.flatnonzero(im[:, 0] >= 0.5)
    np.testing.assert_array_equal(indices[1], at_least_half[:1000])
    assert np.all(errors[1] == 0.0)


def test_topk_float16_memmap(tmp_path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "images.npy"
    stored = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(2000, 24))
    stored[:] = unit_rows(rng, 2000, 24)
    stored.flush()
    del stored
    im = np.load(path, mmap_mode="r")
    s = unit_rows(rng, 9, 24)
    errors, indices = order_topk(s, im, 7)
    expected_errors, expected_indices = direct_topk(s, np.asarray(im), 7)
    np.testing.assert_array_equal(indices, expected_indices)
    assert_close(errors, expected_errors)


@pytest.mark.parametrize("mode", ["r", "c"])
def test_topk_float32_memmap(tmp_path, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "TOPK_BLOCK_BYTES", 4 * 20 * 500)
    rng = np.random.default_rng(6)
    data = unit_rows(rng, 1900, 20)
    np.save(tmp_path / "images.npy", data)
    im = np.load(tmp_path / "images.npy", mmap_mode=mode)
    s = unit_rows(rng, 4, 20)
    errors, indices = order_topk(s, im, 12)
    expected_errors, expected_indices = direct_topk(s, data, 12)
    np.testing.assert_array_equal(indices, expected_indices)
    assert_close(errors, expected_errors)
    np.testing.assert_array_equal(np.asarray(im), data)  # the map still reads the same after its pages are released


def test_topk_converted_layouts_and_query_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "TOPK_QUERIES", 4)
    rng = np.random.default_rng(7)
    im64 = rng.random((30, 600)).T  # float64, not C-contiguous
    s = rng.random((11, 30))
    errors, indices = order_topk(s, im64, 5)
    expected_errors, expected_indices = direct_topk(s.astype(np.float32), im64.astype(np.float32), 5)
    np.testing.assert_array_equal(indices, expected_indices)
    assert_close(errors, expected_errors)


def test_topk_nan_counts_as_infinite() -> None:
    s = np.ones((1, 2), dtype=np.float32)
    im = np.array([[np.nan, 0.0], [0.0, 0.0], [1.0, 1.0], [0.5, 1.0]], dtype=np.float32)
    errors, indices = order_topk(s, im, 4)
    np.testing.assert_array_equal(indices, [[2, 3, 1, 0]])
    np.testing.assert_array_equal(errors, [[0.0, 0.25, 2.0, np.inf]])


def test_topk_sizes_and_errors() -> None:
    s, im = np.ones((3, 4)), np.zeros((5, 4))
    errors, indices = order_topk(s, im, 10)  # k larger than the number of images
    assert errors.shape == indices.shape == (3, 5)
    np.testing.assert_array_equal(indices, np.tile(np.arange(5), (3, 1)))
    np.testing.assert_array_equal(errors, np.full((3, 5), 4.0, dtype=np.float32))
    assert order_topk(np.zeros((0, 4)), im, 2)[0].shape == (0, 2)
    assert order_topk(s, np.zeros((0, 4)), 2)[1].shape == (3, 0)
    zero_dim = order_topk(np.zeros((2, 0)), np.zeros((6, 0)), 3)
    np.testing.assert_array_equal(zero_dim[1], [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(zero_dim[0], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dimension 4 but images have dimension 3"):
        order_topk(s, np.zeros((5, 3)), 2)
    for bad_k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k must be a whole number"):
            order_topk(s, im, bad_k)
    with pytest.raises(ValueError, match="2-D"):
        order_topk(s, np.zeros(4), 2)
    nested = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]  # any array-like, here nested lists
    errors, indices = order_topk([[1.0, 1.0]], nested, 2)
    np.testing.assert_array_equal(indices, [[2, 0]])
    np.testing.assert_array_equal(errors, [[0.5, 1.0]])
    tensor_errors, tensor_indices = order_topk(torch.ones(1, 2), torch.tensor(nested), 2)
    np.testing.assert_array_equal(tensor_indices, indices)
    np.testing.assert_array_equal(tensor_errors, errors)


def test_same_pair_same_bits_everywhere() -> None:
    # Duplicated rows at tile remainders and inside full tiles get bit-identical errors,
    # in the matrix and in the top-k, so ties between duplicates fall to the lower index.
    rng = np.random.default_rng(8)
    s = unit_rows(rng, 7, 1000)
    s[6] = s[1]
    im = unit_rows(rng, 1030, 1000)
    im[[5, 514, 1029]] = im[2]
    errors = order_error_matrix(s, im)
    np.testing.assert_array_equal(errors[6], errors[1])
    for j in (5, 514, 1029):
        np.testing.assert_array_equal(errors[:, j], errors[:, 2])
    top_errors, top_indices = order_topk(s, im, 1030)
    np.testing.assert_array_equal(top_errors, np.take_along_axis(errors, top_indices, 1))
    expected = np.lexsort((np.broadcast_to(np.arange(1030), errors.shape), errors), axis=1)
    np.testing.assert_array_equal(top_indices, expected)


# ---------------------------------------------------------------- sort keys of the GPU top-k


def test_sort_keys_order_errors_then_indices_and_round_trip() -> None:
    from order_embedding.kernels import gpu

    values = np.array([3.5, -0.0, 0.0, -2.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, -2.0, 7.0], dtype=np.float32)
    index = np.arange(len(values))[::-1].copy()  # larger indices first, so ties must be reordered
    keys = gpu.sort_keys(torch.from_numpy(values), torch.from_numpy(index))
    order = torch.argsort(keys).numpy()
    # Independent order: NaN as +inf, -0 as +0, then by index.
    cleaned = np.where(np.isnan(values), np.inf, values).astype(np.float64) + 0.0
    np.testing.assert_array_equal(order, np.lexsort((index, cleaned)))
    errors, indices = gpu.from_keys(keys)
    np.testing.assert_array_equal(errors.numpy(), cleaned.astype(np.float32))
    np.testing.assert_array_equal(indices.numpy(), index)


@pytest.mark.parametrize("device, message", [("tpu", "is not a torch device"), ("cuda:7", "does not exist here")])
def test_index_search_device_option_is_validated(tmp_path, capsys, device: str, message: str) -> None:
    from order_embedding.cli import main

    assert main(["index", "search", str(tmp_path / "missing"), "a query", "--device", device]) == 2
    err = capsys.readouterr().err.strip()
    assert "argument --device" in err and message in err and "\n" not in err
