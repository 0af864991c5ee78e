import numpy as np
import pytest
import torch

from order_embedding.batching import batches_per_epoch, epoch_batches, pad_batch


def _epoch(cap2img, n_images, batch_size, seed):
    return list(epoch_batches(np.asarray(cap2img), n_images, batch_size, np.random.default_rng(seed)))


def test_epoch_visits_every_captioned_image_once_with_its_own_caption():
    # uneven captions per image: image 0 has 3, 1 has 1, 2 has none, 3 has 2, 4 has 4, 5..9 have 1
    cap2img = np.array([0, 0, 0, 1, 3, 3, 4, 4, 4, 4, 5, 6, 7, 8, 9])
    captioned = {0, 1, 3, 4, 5, 6, 7, 8, 9}
    batches = _epoch(cap2img, 10, 3, seed=0)
    assert [len(c) for c, _ in batches] == [3, 3, 3]
    caps = np.concatenate([c for c, _ in batches])
    imgs = np.concatenate([i for _, i in batches])
    assert sorted(imgs.tolist()) == sorted(captioned)
    assert np.array_equal(cap2img[caps], imgs)
    # with batches of 4 the ninth image is a lone final pair and is dropped
    short = _epoch(cap2img, 10, 4, seed=0)
    assert [len(c) for c, _ in short] == [4, 4]
    imgs4 = np.concatenate([i for _, i in short])
    assert len(set(imgs4.tolist())) == 8 and set(imgs4.tolist()) <= captioned
    for c, i in batches:
        assert c.dtype == np.int64 and i.dtype == np.int64


def test_final_partial_batch_of_two_is_kept_and_one_is_dropped():
    assert [len(c) for c, _ in _epoch(np.arange(10), 10, 4, 1)] == [4, 4, 2]
    assert [len(c) for c, _ in _epoch(np.arange(8), 8, 4, 1)] == [4, 4]
    dropped = set()
    for seed in range(20):
        batches = _epoch(np.arange(9), 9, 4, seed)
        assert [len(c) for c, _ in batches] == [4, 4]
        dropped |= set(range(9)) - set(np.concatenate([i for _, i in batches]).tolist())
    # the dropped image is random, so over epochs every image gets trained on
    assert len(dropped) > 1


@pytest.mark.parametrize("n_images, batch_size, expected", [(8000, 128, 63), (2000, 128, 16), (256, 128, 2),
                                                             (129, 128, 1), (130, 128, 2), (1, 128, 0), (0, 4, 0)])
def test_batches_per_epoch_counts_what_an_epoch_yields(n_images, batch_size, expected):
    assert batches_per_epoch(n_images, batch_size) == expected
    assert len(_epoch(np.arange(n_images), n_images, batch_size, seed=0)) == expected


def test_full_coverage_when_nothing_dropped_and_order_is_random():
    cap2img = np.repeat(np.arange(50), 5)
    orders = []
    chosen = []
    for seed in range(3):
        batches = _epoch(cap2img, 50, 10, seed)
        imgs = np.concatenate([i for _, i in batches])
        caps = np.concatenate([c for c, _ in batches])
        assert np.array_equal(np.sort(imgs), np.arange(50))
        assert np.array_equal(caps // 5, imgs)
        orders.append(imgs.tolist())
        chosen.append(dict(zip(imgs.tolist(), caps.tolist())))
    assert orders[0] != orders[1] != orders[2]
    assert orders[0] != sorted(orders[0])
    assert chosen[0] != chosen[1]


def test_caption_choice_is_uniform():
    # image 0 has 4 captions; over many epochs each should be drawn about 1/4 of the time
    cap2img = np.array([0, 0, 0, 0, 1])
    rng = np.random.default_rng(123)
    counts = np.zeros(4)
    n = 4000
    for _ in range(n):
        for c, i in epoch_batches(cap2img, 2, 2, rng):
            counts[c[i == 0][0]] += 1
    # binomial sd = sqrt(n * 1/4 * 3/4) ~ 27; allow 5 sd
    assert np.all(np.abs(counts - n / 4) < 5 * np.sqrt(n * 0.25 * 0.75))


def test_same_seed_same_epoch():
    cap2img = np.repeat(np.arange(30), 3)
    a = _epoch(cap2img, 30, 7, 42)
    b = _epoch(cap2img, 30, 7, 42)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "cap2img, n_images, batch_size, message",
    [
        ([0, 1, 5], 3, 2, "outside"),
        ([0, -1], 3, 2, "outside"),
        ([0, 1], 3, 1, "batch_size"),
        ([[0, 1]], 3, 2, "1-D"),
        ([0.0, 1.0], 3, 2, "integer"),
    ],
)
def test_epoch_rejects_bad_input(cap2img, n_images, batch_size, message):
    with pytest.raises(ValueError, match=message):
        _epoch(cap2img, n_images, batch_size, 0)


def test_pad_batch_appends_one_eos_and_pads_with_zero():
    tokens, lengths = pad_batch([[5, 6, 7], [], [9]])
    expected = torch.tensor([[5, 6, 7, 0], [0, 0, 0, 0], [9, 0, 0, 0]])
    assert tokens.dtype == torch.long and lengths.dtype == torch.long
    assert torch.equal(tokens, expected)
    assert torch.equal(lengths, torch.tensor([4, 1, 2]))


def test_pad_batch_accepts_arrays_and_rejects_empty_batch():
    tokens, lengths = pad_batch([np.array([3, 4]), (2,)])
    assert torch.equal(tokens, torch.tensor([[3, 4, 0], [2, 0, 0]]))
    assert lengths.tolist() == [3, 2]
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])
