"""Feature extraction: crop geometry, features against a direct computation, resume, bad files, weights.

Random torchvision weights throughout (``weights='none'``); nothing touches the network.
"""
from __future__ import annotations

import functools
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_prepare import write_image_dataset

from order_embedding.backbones import torchvision_features
from order_embedding.cli import main
from order_embedding.data import load_split
from order_embedding.data.prepare import prepare
from order_embedding.vision import features as F
from order_embedding.vision.images import IMAGENET_MEAN, IMAGENET_STD, eval_crops

pytest.importorskip("torchvision", reason="needs the 'torchvision' package: pip install '.[vision]'")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = dict(cnn="resnet18", weights="none", image_size=32, resize_size=40, workers=0, device="cpu", verbose=False)


def ten_crops_by_hand(a: np.ndarray, s: int) -> list[np.ndarray]:
    """The 10 crops of an ``H x W x C`` array: corners, centre (floor offsets), then each mirrored."""
    h, w = a.shape[:2]
    five = [a[:s, :s], a[:s, w - s:], a[h - s:, :s], a[h - s:, w - s:],
            a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]]
    return five + [c[:, ::-1] for c in five]


def standardise(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)


@pytest.mark.parametrize("size", [(300, 256), (256, 301), (100, 50)])
def test_crop_geometry(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    resize, crop = (256, 224) if min(size) == 256 else (32, 24)
    w, h = size
    # the shorter side goes to `resize`, the other keeps the aspect ratio (rounded down)
    target = (resize, resize * h // w) if w <= h else (resize * w // h, resize)
    resized = np.asarray(img if min(size) == resize else img.resize(target, Image.BILINEAR))
    assert resized.shape[:2] == (target[1], target[0])
    want = [standardise(c).transpose(2, 0, 1) for c in ten_crops_by_hand(resized, crop)]
    got = eval_crops(img, resize, crop, 10, IMAGENET_MEAN, IMAGENET_STD).numpy()
    assert got.shape == (10, 3, crop, crop)
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)
    np.testing.assert_allclose(eval_crops(img, resize, crop, 1, IMAGENET_MEAN, IMAGENET_STD).numpy(), want[4][None],
                               atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        eval_crops(img, 16, 24, 10, IMAGENET_MEAN, IMAGENET_STD)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    json_path = write_image_dataset(tmp_path / "raw", n_train=4, n_restval=0, n_val=3, n_test=3)
    prepare(json_path, tmp_path / "data", images=tmp_path / "raw", verbose=False)
    return tmp_path / "data"


@functools.lru_cache(maxsize=1)
def seeded_resnet18() -> torch.nn.Module:
    return torchvision_features("resnet18", "none").eval()


def direct_features(paths: list[Path], crops: int, resize: int = 40, size: int = 32) -> np.ndarray:
    """resnet18 (same seeded random weights) on hand-cut crops, averaged, L2-normalised."""
    net = seeded_resnet18()
    rows = []
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[:2]
        t = (resize, resize * h // w) if w <= h else (resize * w // h, resize)
        a = np.asarray(Image.fromarray(a).resize(t, Image.BILINEAR))
        cs = ten_crops_by_hand(a, size)
        cs = cs if crops == 10 else cs[4:5]
        x = torch.from_numpy(np.stack([standardise(c).transpose(2, 0, 1) for c in cs]).copy())
        with torch.no_grad():
            f = net(x).mean(0).numpy()
        rows.append(f / np.linalg.norm(f))
    return np.stack(rows)


def test_features_equal_direct_computation(data: Path) -> None:
    report = F.extract_features(data, crops=10, batch_size=3, **SMALL)
    one = F.extract_features(data, crops=1, splits=["dev"], **SMALL)
    for split, crops in (("train", 10), ("dev", 10), ("test", 10), ("dev", 1)):
        got = np.load(data / "images" / f"resnet18-{crops}crop" / f"{split}.npy")
        files = (data / f"{split}_images.txt").read_text().splitlines()
        assert got.dtype == np.float32 and got.shape == (len(files), 512)
        np.testing.assert_allclose(got, direct_features([data / f for f in files], crops), atol=1e-4)
        assert (report if crops == 10 else one)[split]["unreadable"] == []
    # the trainer's loader reads what was written
    s = load_split(data, "dev", cnn="resnet18-10crop")
    assert s.features.shape == (3, 512) and s.n_captions == 16
    # an existing file is left alone
    assert F.extract_features(data, crops=1, **SMALL)["dev"]["skipped"]


def test_resumed_equals_uninterrupted(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = F.extract_features(data, crops=1, name="whole", splits=["train"], batch_size=1, **SMALL)
    real = F.features_of
    calls = []

    def stop_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "features_of", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        F.extract_features(data, crops=1, name="part", splits=["train"], batch_size=1, **SMALL)
    part = data / "images" / "part"
    assert not (part / "train.npy").exists() and (part / "train.npy.partial").exists()
    assert F.runs.load_json(part / "train.progress.json")["done"] == 2
    monkeypatch.setattr(F, "features_of", real)
    calls.clear()
    F.extract_features(data, crops=1, name="part", splits=["train"], batch_size=1, **SMALL)
    np.testing.assert_array_equal(np.load(part / "train.npy"), np.load(whole["train"]["path"]))
    assert not (part / "train.npy.partial").exists() and not (part / "train.progress.json").exists()
    # a partial run from other settings is refused rather than mixed
    monkeypatch.setattr(F, "features_of", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        F.extract_features(data, crops=1, name="mixed", splits=["train"], batch_size=1, **SMALL)
    monkeypatch.setattr(F, "features_of", real)
    with pytest.raises(ValueError, match="other settings"):
        F.extract_features(data, crops=10, name="mixed", splits=["train"], batch_size=1, **SMALL)


def test_truncated_and_unreadable_images(data: Path) -> None:
    files = (data / "test_images.txt").read_text().splitlines()
    good = (data / files[0]).read_bytes()
    (data / files[1]).write_bytes(good[: len(good) * 2 // 3])  # truncated JPEG: loaded as far as it goes
    (data / files[2]).write_bytes(b"not an image at all")
    report = F.extract_features(data, crops=1, splits=["test"], **{**SMALL, "workers": 1})["test"]
    got = np.load(report["path"])
    assert [u[0] for u in report["unreadable"]] == [2]
    assert np.allclose(np.linalg.norm(got[:2], axis=1), 1, atol=1e-5) and not got[2].any()
    listed = (data / "images" / "resnet18-1crop" / "test_unreadable.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"2\t{data / files[2]}\t")


@pytest.mark.slow
def test_vgg19_fc7_and_resnet152_pool_at_224(tmp_path: Path) -> None:
    json_path = write_image_dataset(tmp_path / "raw", n_train=2, n_restval=0, n_val=0, n_test=0)
    prepare(json_path, tmp_path / "d", images=tmp_path / "raw", verbose=False)
    assert main(["extract-features", str(tmp_path / "d"), "--weights", "none", "--crops", "1", "--workers", "0",
                 "--device", "cpu", "--quiet"]) == 0
    vgg = np.load(tmp_path / "d" / "images" / "1crop" / "train.npy")  # the reference's folder name
    assert vgg.shape == (2, 4096) and (vgg >= 0).all()  # fc7 after its ReLU
    assert np.allclose(np.linalg.norm(vgg, axis=1), 1, atol=1e-5)
    rn = F.extract_features(tmp_path / "d", cnn="resnet152", crops=1, weights="none", workers=0, device="cpu",
                            verbose=False)
    assert np.load(rn["train"]["path"]).shape == (2, 2048)


def test_weights_file_and_errors(data: Path, tmp_path: Path) -> None:
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(5)
    full = torchvision.models.resnet18()
    save_file(full.state_dict(), str(tmp_path / "r18.safetensors"))
    net = torchvision_features("resnet18", str(tmp_path / "r18.safetensors")).eval()
    x = torch.randn(2, 3, 32, 32)
    full.fc = torch.nn.Identity()
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), full.eval()(x).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="does not fit vgg19"):
        torchvision_features("vgg19", str(tmp_path / "r18.safetensors"))
    with pytest.raises(ValueError, match="not found"):
        torchvision_features("resnet18", str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="unknown cnn"):
        F.extract_features(data, cnn="alexnet", weights="none", verbose=False)
    assert main(["extract-features", str(tmp_path / "nowhere")]) == 2


class _FakeVisual(torch.nn.Module):
    image_size = 24
    image_mean = (0.5, 0.4, 0.3)
    image_std = (0.2, 0.25, 0.3)


class _FakeClip(torch.nn.Module):
    """Stands in for an open_clip model: a fixed linear map of the whole crop."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = _FakeVisual()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(11)
            self.proj = torch.nn.Conv2d(3, 6, 24)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(1)


def test_clip_through_open_clip(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("open_clip")
    fake.create_model = lambda name, pretrained=None: (calls.append((name, pretrained)), _FakeClip())[1]
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    report = F.extract_features(data, cnn="clip", crops=1, weights="none", clip_model="RN50", splits=["dev"],
                                workers=0, device="cpu", verbose=False)
    assert calls[-1] == ("RN50", None) and report["dev"]["path"].endswith("clip-1crop/dev.npy")
    net = _FakeClip().eval()
    rows = []
    for f in (data / "dev_images.txt").read_text().splitlines():
        a = np.asarray(Image.open(data / f).convert("RGB"))
        h, w = a.shape[:2]
        a = np.asarray(Image.fromarray(a).resize((27, 27 * h // w) if w <= h else (27 * w // h, 27), Image.BILINEAR))
        c = ten_crops_by_hand(a, 24)[4].astype(np.float32) / 255.0
        c = (c - np.array(_FakeVisual.image_mean, np.float32)) / np.array(_FakeVisual.image_std, np.float32)
        with torch.no_grad():
            v = net.encode_image(torch.from_numpy(c.transpose(2, 0, 1).copy())[None])[0].numpy()
        rows.append(v / np.linalg.norm(v))
    np.testing.assert_allclose(np.load(report["dev"]["path"]), np.stack(rows), atol=1e-5)
    monkeypatch.setitem(sys.modules, "open_clip", None)  # not installed
    with pytest.raises(ValueError, match=r"order-embedding\[clip\]"):
        F.build_extractor("clip")
