"""prepare: a Karpathy dataset file (generated here, with its images) to the original layout.

The expected layout is derived in the test straight from the generated JSON records.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from order_embedding.cli import main
from order_embedding.data import DataError, load_split
from order_embedding.data.prepare import MISSING, prepare

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
SIZES = [(48, 40), (40, 56), (64, 48)]
KARPATHY = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)}


def write_image_dataset(root: Path, n_train: int = 8, n_restval: int = 4, n_val: int = 6, n_test: int = 6,
                        missing: int = 0, uneven: bool = True, seed: int = 0) -> Path:
    """Small coloured-square images under ``root/{train2014,val2014}`` and ``root/dataset_toy.json``.

    Captions name the colour; with ``uneven`` odd images get 6 captions instead of 5.
    The last ``missing`` images of the file are not written to disk.
    """
    rng = np.random.default_rng(seed)
    splits = ["train"] * n_train + ["restval"] * n_restval + ["val"] * n_val + ["test"] * n_test
    records = []
    for i, split in enumerate(splits):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        w, h = SIZES[i % len(SIZES)]
        folder = "train2014" if split in ("train", "restval") else "val2014"
        if i < len(splits) - missing:
            img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(200, 256, 3)))
            ImageDraw.Draw(img).rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=COLOURS[colour])
            (root / folder).mkdir(parents=True, exist_ok=True)
            img.save(root / folder / f"im{i}.jpg", quality=95)
        n_caps = 6 if uneven and i % 2 else 5
        sentences = [{"tokens": ["a", colour, "square", f"w{i}", f"v{k}"], "raw": f"A {colour} square.", "imgid": i,
                      "sentid": 10 * i + k} for k in range(n_caps)]
        records.append({"filepath": folder, "filename": f"im{i}.jpg", "imgid": i, "split": split,
                        "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
    (root / "dataset_toy.json").write_text(json.dumps({"dataset": "toy", "images": records}))
    return root / "dataset_toy.json"


def expected(json_path: Path, split: str, five: bool = False) -> tuple[list[str], list[int], list[str]]:
    """Captions, caption-to-image rows and image files of a split, read directly from the JSON."""
    records = [r for r in json.loads(json_path.read_text())["images"] if r["split"] in KARPATHY[split]]
    captions, cap2img, files = [], [], []
    for row, r in enumerate(records):
        sents = r["sentences"][:5] if five else r["sentences"]
        captions += [" ".join(s["tokens"]) for s in sents]
        cap2img += [row] * len(sents)
        files.append(f"{r['filepath']}/{r['filename']}")
    return captions, cap2img, files


@pytest.mark.parametrize("five", [False, True])
def test_layout_matches_the_json(tmp_path: Path, five: bool) -> None:
    json_path = write_image_dataset(tmp_path / "raw", missing=2)
    out = tmp_path / "data"
    report = prepare(json_path, out, images=tmp_path / "raw", five=five, verbose=False)
    for split in ("train", "dev", "test"):
        captions, cap2img, files = expected(json_path, split, five)
        assert (out / f"{split}.txt").read_text().splitlines() == captions
        # with --five every image has 5 captions: no cap2img file, as in the original release
        assert (out / f"{split}_cap2img.txt").exists() == (not five)
        s = load_split(out, split)
        assert s.captions == captions and s.cap2img.tolist() == cap2img
        # image paths are relative to the data folder and point at the JSON's files
        listed = (out / f"{split}_images.txt").read_text().splitlines()
        assert [(out / p).resolve() for p in listed] == [(tmp_path / "raw" / f).resolve() for f in files]
        assert report["splits"][split] == {"images": len(files), "captions": len(captions),
                                           "missing": 2 if split == "test" else 0}
    assert report["splits"]["train"]["images"] == 12  # restval folded into train
    missing = (out / MISSING).read_text().splitlines()
    assert missing == [f"test\t{tmp_path / 'raw' / 'val2014' / f'im{i}.jpg'}" for i in (22, 23)]


def test_cli_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    json_path = write_image_dataset(tmp_path / "raw", uneven=False)
    assert main(["prepare", str(json_path), "--images", str(tmp_path / "raw"), "--out", str(tmp_path / "d")]) == 0
    assert "train: 12 images, 60 captions" in capsys.readouterr().out
    assert not (tmp_path / "d" / MISSING).exists()
    assert main(["prepare", str(tmp_path / "nope.json"), "--out", str(tmp_path / "d")]) == 2
    assert "nope.json not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"images": [{"split": "val", "filename": "a.jpg", "sentences": []}]}))
    with pytest.raises(DataError, match="no train images"):
        prepare(tmp_path / "bad.json", tmp_path / "e", verbose=False)
