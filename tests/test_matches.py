"""Known matches: the shapes world's file against the truth checker, the reader's checks, and training with
``true_matches`` (the paper's loss when only the pairing is known)."""
import numpy as np
import pytest
from conftest import TINY_MODEL, write_tiny_dataset
from safetensors.numpy import load_file

from order_embedding import train
from order_embedding.cli import main
from order_embedding.data import DataError, load_split
from order_embedding.data.matches import load_matches, matches_path, save_matches
from order_embedding.data.shapes import generate_shapes
from order_embedding.data.shapes_truth import is_true_of, load_scenes, parse_caption


def test_shapes_world_writes_every_true_match(tmp_path):
    json_path = generate_shapes(tmp_path / "w", n_train=30, n_dev=5, n_test=5, seed=1, image_size=32, verbose=False)
    split = load_split(tmp_path / "w", "train")
    known = load_matches(tmp_path / "w", split).block(np.arange(split.n_captions), np.arange(split.n_images))
    captions, scenes = load_scenes(json_path, "train")
    assert captions == split.captions
    expected = np.array([[is_true_of(parse_caption(c), scene) for scene in scenes] for c in captions])
    np.testing.assert_array_equal(known, expected)
    assert known.sum() > len(captions)  # general captions describe other images too
    rows = np.array([3, 0, 17]), np.array([29, 2])
    np.testing.assert_array_equal(load_matches(tmp_path / "w", split).block(*rows), expected[np.ix_(*rows)])


def test_bad_matches_files_are_one_line_errors(tmp_path):
    data = write_tiny_dataset(tmp_path / "d", n_train=10)
    split = load_split(data, "train")
    with pytest.raises(DataError, match="train_matches.npy: no known matches"):
        load_matches(data, split)
    path = matches_path(data, "train")
    save_matches(path, np.ones((split.n_captions, split.n_images + 9), dtype=bool))
    with pytest.raises(DataError, match=r"expected uint8 of shape \(50, 2\)"):
        load_matches(data, split)
    truth = np.eye(split.n_images, dtype=bool)[split.cap2img]
    truth[7, split.cap2img[7]] = False
    save_matches(path, truth)
    with pytest.raises(DataError, match="caption 7 does not match its own image 1"):
        load_matches(data, split)
    np.save(path, np.zeros((split.n_captions, 2), dtype=np.int64))
    with pytest.raises(DataError, match="expected uint8"):
        load_matches(data, split)


def test_cli_names_the_missing_file(tmp_path, capsys):
    data = write_tiny_dataset(tmp_path / "d", n_train=10)
    code = main(["train", "--data", str(data), "--save_dir", str(tmp_path / "runs"), "--name", "r",
                 "--true_matches", "true", "--max_epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "train_matches.npy: no known matches" in err[0], err


def _trained(root, data, name, **extra):
    run = train.trainer("order", name=name, save_dir=str(root), data=str(data), max_epochs=2, seed=3,
                        **{**TINY_MODEL, **extra})
    return load_file(run / "model.safetensors")


def test_training_with_only_the_pairing_known_is_the_papers(tmp_path, one_torch_thread):
    data = write_tiny_dataset(tmp_path / "d", n_train=40)
    split = load_split(data, "train")
    save_matches(matches_path(data, "train"), np.eye(split.n_images, dtype=bool)[split.cap2img])
    plain = _trained(tmp_path / "runs", data, "plain")
    paired = _trained(tmp_path / "runs", data, "paired", true_matches=True)
    for k in plain:
        np.testing.assert_allclose(paired[k], plain[k], rtol=1e-5, atol=1e-6)
    # a caption describes every image that has the same caption (images of one class): another loss
    texts = [set() for _ in range(split.n_images)]
    for c, i in zip(split.captions, split.cap2img):
        texts[i].add(c)
    same = np.array([[c in texts[j] for j in range(split.n_images)] for c in split.captions])
    assert same.sum() > split.n_captions
    save_matches(matches_path(data, "train"), same)
    shared = _trained(tmp_path / "runs", data, "shared", true_matches=True)
    assert any(not np.allclose(shared[k], plain[k], rtol=1e-5, atol=1e-6) for k in plain)
