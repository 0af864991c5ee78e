import json
from pathlib import Path

import numpy as np
import pytest
from helpers import REAL_CAPTIONS, needs_real_captions

from order_embedding.data import DataError, Split, load_split, resolve_data_dir


def _write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")


def _features(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _original(root: Path, stem: str = "train", n_images: int = 3, per_image: int = 5, cnn: str = "10crop"):
    caps = [f"caption {c} of image {c // per_image}" for c in range(n_images * per_image)]
    _write_lines(root / f"{stem}.txt", caps)
    feats = _features(n_images)
    (root / "images" / cnn).mkdir(parents=True, exist_ok=True)
    np.save(root / "images" / cnn / f"{stem}.npy", feats)
    return caps, feats


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- original layout


def test_original_five_captions_per_image(tmp_path):
    caps, feats = _original(tmp_path)
    s = load_split(tmp_path, "train")
    assert s.name == "train" and s.captions == caps
    assert s.cap2img.dtype == np.int64
    assert s.cap2img.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert s.features.dtype == np.float32 and np.array_equal(s.features, feats)
    assert s.n_images == 3 and s.n_captions == 15
    assert s.image_files is None


def test_original_dev_is_val_and_cnn_choice(tmp_path):
    caps, feats = _original(tmp_path, "val", n_images=2, cnn="1crop")
    s = load_split(tmp_path, "dev", cnn="1crop")
    assert s.name == "dev" and s.captions == caps and np.array_equal(s.features, feats)
    other = tmp_path / "other"
    caps2, feats2 = _original(other, "dev", n_images=2)
    s2 = load_split(other, "dev")
    assert s2.captions == caps2 and np.array_equal(s2.features, feats2)
    assert load_split(other, "val").captions == caps2


def test_original_float64_features_become_float32(tmp_path):
    _write_lines(tmp_path / "test.txt", ["a b", "c d"])
    feats = np.array([[1.5, -2.0, 3.25]], dtype=np.float64)
    (tmp_path / "images" / "10crop").mkdir(parents=True)
    np.save(tmp_path / "images" / "10crop" / "test.npy", feats)
    s = load_split(tmp_path, "test")
    assert s.features.dtype == np.float32
    assert np.array_equal(s.features, feats.astype(np.float32))
    assert s.cap2img.tolist() == [0, 0]


def test_original_cap2img_file_uneven_captions_and_image_without_captions(tmp_path):
    _original(tmp_path, n_images=4, per_image=1)
    caps = ["a", "b", "c", "d", "e", "f", "g"]
    _write_lines(tmp_path / "train.txt", caps)
    # image 0: 3 captions, image 1: none, image 2: 1, image 3: 3 (not consecutive)
    c2i = [0, 0, 3, 2, 0, 3, 3]
    _write_lines(tmp_path / "train_cap2img.txt", c2i)
    s = load_split(tmp_path, "train")
    assert s.cap2img.tolist() == c2i and s.n_images == 4
    f = s.fold(1, size=2)  # images 2 and 3
    assert f.captions == ["c", "d", "f", "g"]
    assert f.cap2img.tolist() == [1, 0, 1, 1]
    assert np.array_equal(f.features, s.features[2:4])


def test_original_image_files_without_features(tmp_path):
    _write_lines(tmp_path / "train.txt", ["a", "b", "c", "d"])
    _write_lines(tmp_path / "train_images.txt", ["x/1.jpg", "x/2.jpg"])
    s = load_split(tmp_path, "train")
    assert s.features is None
    assert s.image_files == ["x/1.jpg", "x/2.jpg"]
    assert s.image_root == str(tmp_path)
    assert s.cap2img.tolist() == [0, 0, 1, 1] and s.n_images == 2
    s2 = load_split(tmp_path, "train", image_root="/pictures")
    assert s2.image_root == "/pictures"


def test_original_image_files_with_features(tmp_path):
    caps, feats = _original(tmp_path, n_images=2)
    _write_lines(tmp_path / "train_images.txt", ["p.jpg", "q.jpg"])
    s = load_split(tmp_path, "train")
    assert s.image_files == ["p.jpg", "q.jpg"] and np.array_equal(s.features, feats)
    _write_lines(tmp_path / "train_images.txt", ["p.jpg"])
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "train")
    msg = _one_line(e)
    assert "train.npy" in msg and "train_images.txt" in msg and "2" in msg and "1" in msg


def test_original_crlf_and_surrounding_spaces(tmp_path):
    _original(tmp_path, n_images=1, per_image=2)
    (tmp_path / "train.txt").write_bytes(b"  a dog .\r\nthe cat\r\n")
    assert load_split(tmp_path, "train").captions == ["a dog .", "the cat"]


# ---------------------------------------------------------------- VSE++ precomputed layout


def test_precomp_five_captions_per_row(tmp_path):
    caps = [f"c{i}" for i in range(10)]
    _write_lines(tmp_path / "testall_caps.txt", caps)
    feats = _features(2)
    np.save(tmp_path / "testall_ims.npy", feats)
    s = load_split(tmp_path, "testall")
    assert s.captions == caps and s.cap2img.tolist() == [0] * 5 + [1] * 5
    assert np.array_equal(s.features, feats) and s.image_files is None


def test_precomp_repeated_rows_are_deduplicated(tmp_path):
    caps = [f"c{i}" for i in range(12)]
    _write_lines(tmp_path / "train_caps.txt", caps)
    feats = _features(4)
    np.save(tmp_path / "train_ims.npy", np.repeat(feats, 3, axis=0))
    s = load_split(tmp_path, "train")
    assert s.n_images == 4 and np.array_equal(s.features, feats)
    assert s.cap2img.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_precomp_one_caption_per_distinct_row(tmp_path):
    _write_lines(tmp_path / "dev_caps.txt", ["a", "b", "c", "d"])
    feats = _features(4)
    feats[1] = feats[0]  # a repeat that is not a whole grouping of the rows
    np.save(tmp_path / "dev_ims.npy", feats)
    s = load_split(tmp_path, "dev")
    assert s.n_images == 4 and s.cap2img.tolist() == [0, 1, 2, 3]
    assert np.array_equal(s.features, feats)


def test_precomp_dev_named_val(tmp_path):
    _write_lines(tmp_path / "val_caps.txt", ["a", "b"])
    np.save(tmp_path / "val_ims.npy", _features(1))
    assert load_split(tmp_path, "dev").cap2img.tolist() == [0, 0]


def test_precomp_count_mismatch(tmp_path):
    _write_lines(tmp_path / "test_caps.txt", [f"c{i}" for i in range(7)])
    np.save(tmp_path / "test_ims.npy", _features(3))
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "test")
    msg = _one_line(e)
    assert "test_caps.txt" in msg and "test_ims.npy" in msg and "7 captions" in msg and "3 images" in msg


def test_precomp_missing_features(tmp_path):
    _write_lines(tmp_path / "test_caps.txt", ["a"])
    with pytest.raises(DataError, match="test_ims.npy"):
        load_split(tmp_path, "test")


# ---------------------------------------------------------------- Karpathy layout


def _karpathy_images():
    def im(split, name, sents, filepath="train2014"):
        d = {
            "split": split,
            "filename": name,
            "imgid": 0,
            "sentids": [],
            "sentences": [{"tokens": t.split(), "raw": t, "imgid": 0, "sentid": 0} for t in sents],
        }
        if filepath is not None:
            d["filepath"] = filepath
        return d

    return [
        im("train", "a.jpg", ["a dog runs", "dog running"]),
        im("val", "b.jpg", ["a cat"], filepath="val2014"),
        im("restval", "c.jpg", ["x y", "y z", "z w", "w v", "v u", "u t"]),
        im("test", "d.jpg", ["one", "two", "three"], filepath=None),
        im("train", "e.jpg", ["last one"]),
        im("test", "f.jpg", ["four"]),
    ]


def _karpathy(root: Path, with_features: bool = True):
    images = _karpathy_images()
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_toy.json").write_text(json.dumps({"dataset": "toy", "images": images}))
    feats = _features(len(images))
    if with_features:
        (root / "images" / "10crop").mkdir(parents=True)
        np.save(root / "images" / "10crop" / "dataset_toy.npy", feats)
    return feats


def test_karpathy_train_includes_restval_and_all_captions(tmp_path):
    feats = _karpathy(tmp_path)
    s = load_split(tmp_path, "train")
    assert s.captions == ["a dog runs", "dog running", "x y", "y z", "z w", "w v", "v u", "u t", "last one"]
    assert s.cap2img.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2]
    assert s.image_files == ["train2014/a.jpg", "train2014/c.jpg", "train2014/e.jpg"]
    assert np.array_equal(s.features, feats[[0, 2, 4]])
    assert s.image_root == str(tmp_path)


def test_karpathy_dev_test_and_json_path(tmp_path):
    feats = _karpathy(tmp_path)
    dev = load_split(tmp_path / "dataset_toy.json", "dev")
    assert dev.captions == ["a cat"] and dev.image_files == ["val2014/b.jpg"]
    assert np.array_equal(dev.features, feats[[1]])
    test = load_split(tmp_path, "test", image_root="/imgs")
    assert test.captions == ["one", "two", "three", "four"]
    assert test.cap2img.tolist() == [0, 0, 0, 1]
    assert test.image_files == ["d.jpg", "train2014/f.jpg"] and test.image_root == "/imgs"
    assert np.array_equal(test.features, feats[[3, 5]])


def test_karpathy_without_features(tmp_path):
    _karpathy(tmp_path, with_features=False)
    s = load_split(tmp_path, "test")
    assert s.features is None and s.n_images == 2


def test_karpathy_feature_rows_must_cover_all_images(tmp_path):
    _karpathy(tmp_path, with_features=False)
    (tmp_path / "images" / "10crop").mkdir(parents=True)
    np.save(tmp_path / "images" / "10crop" / "dataset_toy.npy", _features(4))
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "train")
    msg = _one_line(e)
    assert "dataset_toy.npy" in msg and "dataset_toy.json" in msg and "4 rows" in msg and "6 images" in msg


def test_karpathy_unknown_split_and_several_files(tmp_path):
    _karpathy(tmp_path)
    with pytest.raises(DataError, match="no images in split 'testall'"):
        load_split(tmp_path, "testall")
    (tmp_path / "dataset_other.json").write_text("{}")
    with pytest.raises(DataError, match="several Karpathy files"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize(
    "doc, message",
    [
        ("not json", "not valid JSON"),
        ({"images": 5}, "list \"images\""),
        ({"images": [{"filename": "a.jpg", "sentences": []}]}, "image 0 has no \"split\""),
        ({"images": [{"split": "train", "sentences": []}]}, "image 0 needs a \"filename\""),
        ({"images": [{"split": "train", "filename": "a", "sentences": [{"raw": "x"}]}]}, "sentence 0"),
        ({"images": [{"split": "train", "filename": "a", "sentences": [{"tokens": []}]}]}, "empty caption"),
    ],
)
def test_karpathy_malformed(tmp_path, doc, message):
    p = tmp_path / "dataset_bad.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError, match=message) as e:
        load_split(p, "train")
    assert str(p) in _one_line(e)


# ---------------------------------------------------------------- validation


def test_missing_split_names_files_looked_for(tmp_path):
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "dev")
    msg = _one_line(e)
    for name in ("dev.txt", "val.txt", "dev_caps.txt", "val_caps.txt", "dataset_*.json"):
        assert name in msg


def test_original_without_images(tmp_path):
    _write_lines(tmp_path / "test.txt", ["a"])
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "test")
    msg = _one_line(e)
    assert "test.npy" in msg and "test_images.txt" in msg


def test_features_must_be_2d(tmp_path):
    _original(tmp_path)
    np.save(tmp_path / "images" / "10crop" / "train.npy", np.zeros((3, 2, 2), np.float32))
    with pytest.raises(DataError, match=r"train\.npy.*2-D.*\(3, 2, 2\)"):
        load_split(tmp_path, "train")


def test_non_finite_features_counted_by_row(tmp_path):
    _original(tmp_path, n_images=4)
    f = _features(4)
    f[1, 0] = np.nan
    f[3, 2] = np.inf
    f[3, 4] = np.nan
    np.save(tmp_path / "images" / "10crop" / "train.npy", f)
    with pytest.raises(DataError, match=r"train\.npy: 2 of 4 feature rows contain NaN or infinite"):
        load_split(tmp_path, "train")


def test_float64_overflowing_float32_is_non_finite(tmp_path):
    _write_lines(tmp_path / "test_caps.txt", ["a"])
    np.save(tmp_path / "test_ims.npy", np.array([[1e300, 0.0]]))
    with pytest.raises(DataError, match="1 of 1 feature rows"):
        load_split(tmp_path, "test")


def test_pickled_features_are_refused(tmp_path):
    _write_lines(tmp_path / "test_caps.txt", ["a"])
    np.save(tmp_path / "test_ims.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="test_ims.npy"):
        load_split(tmp_path, "test")


def test_corrupt_npy(tmp_path):
    _write_lines(tmp_path / "test_caps.txt", ["a"])
    (tmp_path / "test_ims.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="not a readable .npy"):
        load_split(tmp_path, "test")


def test_empty_caption_line(tmp_path):
    _original(tmp_path, n_images=1)
    (tmp_path / "train.txt").write_text("a\nb\n   \nd\ne\n")
    with pytest.raises(DataError, match=r"train\.txt: line 3 is an empty caption"):
        load_split(tmp_path, "train")


def test_non_utf8_caption_line(tmp_path):
    _original(tmp_path, n_images=1)
    (tmp_path / "train.txt").write_bytes(b"a\nb\nc\nd \xff\xfe\ne\n")
    with pytest.raises(DataError, match=r"train\.txt: line 4 is not valid UTF-8"):
        load_split(tmp_path, "train")


def test_caption_feature_count_mismatch(tmp_path):
    _original(tmp_path, n_images=3)
    _write_lines(tmp_path / "train.txt", [f"c{i}" for i in range(14)])
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "train")
    msg = _one_line(e)
    assert "train.txt has 14 captions" in msg and "train.npy has 3 images" in msg


def test_cap2img_out_of_range(tmp_path):
    _original(tmp_path, n_images=3, per_image=1)
    _write_lines(tmp_path / "train_cap2img.txt", [0, 3, 1])
    with pytest.raises(DataError, match=r"train_cap2img\.txt: line 2 points to image 3, outside 0\.\.2"):
        load_split(tmp_path, "train")
    _write_lines(tmp_path / "train_cap2img.txt", [0, -1, 1])
    with pytest.raises(DataError, match="line 2 points to image -1"):
        load_split(tmp_path, "train")


def test_cap2img_malformed(tmp_path):
    _original(tmp_path, n_images=3, per_image=1)
    _write_lines(tmp_path / "train_cap2img.txt", [0, 1])
    with pytest.raises(DataError) as e:
        load_split(tmp_path, "train")
    msg = _one_line(e)
    assert "train.txt has 3 captions" in msg and "train_cap2img.txt has 2" in msg
    _write_lines(tmp_path / "train_cap2img.txt", [0, "one", 1])
    with pytest.raises(DataError, match=r"line 2 is 'one', not an image index"):
        load_split(tmp_path, "train")


def test_path_that_is_a_plain_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("x")
    with pytest.raises(DataError, match="Karpathy"):
        load_split(p, "train")


# ---------------------------------------------------------------- Split, folds, data folder


def test_fold_follows_coco_1k_protocol(tmp_path):
    caps, feats = _original(tmp_path, "test", n_images=5, per_image=5)
    s = load_split(tmp_path, "test")
    for k in range(2):
        f = s.fold(k, size=2)
        assert f.captions == caps[10 * k : 10 * k + 10]
        assert f.cap2img.tolist() == [0] * 5 + [1] * 5
        assert np.array_equal(f.features, feats[2 * k : 2 * k + 2])
    last = s.fold(2, size=2)  # the split ends: only image 4
    assert last.captions == caps[20:] and last.n_images == 1
    with pytest.raises(DataError, match="no fold 3"):
        s.fold(3, size=2)
    whole = s.fold(0)  # fewer than 1000 images: the whole split
    assert whole.captions == caps and np.array_equal(whole.features, feats)


def test_subset_reorders_images_and_keeps_caption_order():
    s = Split(
        "x",
        ["a", "b", "c", "d", "e"],
        np.array([2, 0, 2, 1, 0]),
        features=np.arange(6, dtype=np.float32).reshape(3, 2),
        image_files=["i0", "i1", "i2"],
    )
    t = s.subset([2, 0])
    assert t.captions == ["a", "b", "c", "e"]
    assert t.cap2img.tolist() == [0, 1, 0, 1]
    assert t.features.tolist() == [[4, 5], [0, 1]] and t.image_files == ["i2", "i0"]
    with pytest.raises(DataError, match="distinct"):
        s.subset([1, 1])
    with pytest.raises(DataError, match="0..2"):
        s.subset([3])


def test_split_checks_its_own_consistency():
    with pytest.raises(DataError, match="3 captions but 2"):
        Split("x", ["a", "b", "c"], np.array([0, 0]))
    with pytest.raises(DataError, match="caption 1 points to image 4"):
        Split("x", ["a", "b"], np.array([0, 4]), features=np.zeros((2, 3), np.float32))
    assert Split("x", ["a", "b"], [0, 3]).n_images == 4


def test_resolve_data_dir(tmp_path, monkeypatch):
    (tmp_path / "root" / "coco").mkdir(parents=True)
    assert resolve_data_dir(str(tmp_path / "root")) == tmp_path / "root"
    monkeypatch.setenv("ORDER_EMBEDDING_DATA", str(tmp_path / "root"))
    assert resolve_data_dir("coco") == tmp_path / "root" / "coco"
    with pytest.raises(DataError) as e:
        resolve_data_dir("f30k")
    msg = _one_line(e)
    assert "'f30k'" in msg and str(tmp_path / "root" / "f30k") in msg


def test_load_split_by_name_under_data_root(tmp_path, monkeypatch):
    caps, _ = _original(tmp_path / "toy", "test", n_images=1)
    monkeypatch.setenv("ORDER_EMBEDDING_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path / "toy" / "images")
    assert load_split("toy", "test").captions == caps


def test_chunked_scans_see_every_row(tmp_path, monkeypatch):
    import order_embedding.data.splits as data

    monkeypatch.setattr(data, "_SCAN_ROWS", 4)
    feats = _features(6)
    rows = np.repeat(feats, 2, axis=0)
    _write_lines(tmp_path / "train_caps.txt", [f"c{i}" for i in range(12)])
    np.save(tmp_path / "train_ims.npy", rows)
    s = load_split(tmp_path, "train")
    assert s.n_images == 6 and np.array_equal(s.features, feats)
    rows[11] += 1  # the last pair differs: rows are distinct images after all
    np.save(tmp_path / "train_ims.npy", rows)
    s = load_split(tmp_path, "train")
    assert s.n_images == 12 and s.cap2img.tolist() == list(range(12))
    rows[10, 3] = np.nan
    np.save(tmp_path / "train_ims.npy", rows)
    with pytest.raises(DataError, match="1 of 12 feature rows"):
        load_split(tmp_path, "train")


@needs_real_captions
def test_real_coco_test_captions_in_precomp_layout(tmp_path):
    real = REAL_CAPTIONS
    lines = real.read_text(encoding="utf-8").splitlines()
    (tmp_path / "testall_caps.txt").write_bytes(real.read_bytes())
    feats = _features(len(lines) // 5, d=4)
    np.save(tmp_path / "testall_ims.npy", feats)
    s = load_split(tmp_path, "testall")
    assert s.n_images == 5000 and s.n_captions == 25000
    f = s.fold(3)
    assert f.captions == [x.strip() for x in lines[15000:20000]]
    assert np.array_equal(f.cap2img, np.arange(5000) // 5)
    assert np.array_equal(f.features, feats[3000:4000])


def test_features_are_lazy_and_writes_do_not_reach_the_file(tmp_path):
    _, feats = _original(tmp_path)
    s = load_split(tmp_path, "train")
    assert isinstance(s.features, np.memmap) and s.features.flags.writeable
    s.features[0, 0] = 1234.0
    assert np.array_equal(np.load(tmp_path / "images" / "10crop" / "train.npy"), feats)
