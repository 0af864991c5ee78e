"""From image files to a trained, evaluated model: on extracted features, and end to end with a torchvision backbone.

Retrieval metrics are re-derived here with NumPy from the model's embeddings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import needs, order_penalty
from PIL import Image
from test_features import standardise, ten_crops_by_hand
from test_prepare import write_image_dataset

from order_embedding import inference as api
from order_embedding import runs, train
from order_embedding.backbones import torchvision_features
from order_embedding.cli import main
from order_embedding.data import load_split
from order_embedding.data.prepare import prepare
from order_embedding.evaluation import ranking_eval_5fold
from order_embedding.model import ModelConfig, OrderEmbeddingModel
from order_embedding.vision.images import BackboneImageSource, image_paths
from order_embedding.vocab import Vocabulary

TINY = dict(dim=16, dim_word=8, batch_size=4, max_epochs=2, dispFreq=1, validFreq=3, verbose=False)
LOADER = {"weights": "none", "image_size": 32, "resize_size": 40, "crops": 10}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    json_path = write_image_dataset(tmp_path / "raw", n_train=6, n_restval=2, n_val=4, n_test=4)
    prepare(json_path, tmp_path / "data", images=tmp_path / "raw", verbose=False)
    return tmp_path / "data"


def recalls(s: np.ndarray, im: np.ndarray, cap2img: np.ndarray) -> dict[str, dict[str, float]]:
    """R@1/5/10 both ways under the order-violation error, computed directly (ties go to the lower index)."""
    e = order_penalty(s, im)

    def rank(values: np.ndarray, j: int) -> int:
        return int((values < values[j]).sum() + (values[:j] == values[j]).sum())

    t2i = np.array([rank(e[c], cap2img[c]) for c in range(len(s))])
    i2t = np.array([min(rank(e[:, i], c) for c in np.flatnonzero(cap2img == i)) for i in range(len(im))])
    return {d: {f"R@{k}": 100.0 * float(np.mean(r < k)) for k in (1, 5, 10)} for d, r in (("t2i", t2i), ("i2t", i2t))}


@needs("torchvision", "vision")
def test_prepare_extract_train_evaluate(data: Path, tmp_path: Path) -> None:
    assert main(["extract-features", str(data), "--cnn", "resnet18", "--weights", "none", "--image-size", "32",
                 "--workers", "0", "--device", "cpu", "--quiet"]) == 0
    assert main(["train", "--data", str(data), "--cnn", "resnet18-10crop", "--dim_image", "512", "--dim", "16",
                 "--dim_word", "8", "--batch_size", "4", "--max_epochs", "2", "--validFreq", "3",
                 "--save_dir", str(tmp_path / "runs"), "--name", "feat", "--quiet"]) == 0
    run = tmp_path / "runs" / "feat"
    assert main(["evaluate", str(run), "--json", str(tmp_path / "m.json")]) == 0
    got = json.loads((tmp_path / "m.json").read_text())["order"]
    model = api.load_model(run, device="cpu")
    test = load_split(data, "test", cnn="resnet18-10crop")
    want = recalls(api.encode_sentences(model, test.captions), api.encode_images(model, test.features), test.cap2img)
    for d in ("t2i", "i2t"):
        for k, v in want[d].items():
            assert got[d][k] == pytest.approx(v, abs=0.01)


def backbone_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.slow
@needs("torchvision", "vision")
@pytest.mark.parametrize("finetune", [False, True])
def test_backbone_training_end_to_end(data: Path, tmp_path: Path, finetune: bool) -> None:
    initial = backbone_state(torchvision_features("resnet18", "none"))
    run = train.trainer("order", data=str(data), backbone="resnet18", dim_image=512, save_dir=str(tmp_path),
                        name="e2e", backbone_options={**LOADER, "finetune": finetune}, **TINY)
    model = api.load_model(run, device="cpu")
    trained = backbone_state(model.net.image.backbone.net)
    weights = [k for k in initial if k.endswith("weight")]
    stats = [k for k in initial if k.endswith("running_mean")]
    changed = lambda keys: any(not torch.equal(initial[k], trained[k]) for k in keys)  # noqa: E731
    # frozen: weights and batch-norm statistics untouched; fine-tuned: both move
    assert changed(weights) == finetune and changed(stats) == finetune
    # evaluation encodes each test image as the mean over its 10 hand-cut crops
    test = load_split(data, "test")
    with torch.no_grad():
        im = model.net.encode_image(hand_cut_crops(image_paths(test.image_files, test.image_root))).numpy()
    want = recalls(api.encode_sentences(model, test.captions), im, test.cap2img)
    got = ranking_eval_5fold(model, split="test")
    for d in ("t2i", "i2t"):
        for k, v in want[d].items():
            assert got[d][k] == pytest.approx(v)


@needs("torchvision", "vision")
def test_backbone_lrate_sets_the_backbone_step_only(data: Path, tmp_path: Path) -> None:
    initial = backbone_state(torchvision_features("resnet18", "none"))
    run = train.trainer("order", data=str(data), backbone="resnet18", dim_image=512, save_dir=str(tmp_path),
                        name="slow", backbone_options={**LOADER, "finetune": True}, backbone_lrate=1e-9, **TINY)
    model = api.load_model(run, device="cpu")
    trained = backbone_state(model.net.image.backbone.net)
    moved = max(float((initial[k] - trained[k]).abs().max()) for k in initial if k.endswith("weight"))
    # Adam moves each weight by about the learning rate per update: a few updates at 1e-9 stay tiny
    assert 0 < moved < 1e-7
    groups = train.parameter_groups(model.net, 1e-3, 1e-9)
    backbone = {id(p) for p in model.net.image.backbone.parameters()}
    assert [g["lr"] for g in groups] == [1e-3, 1e-9]
    assert {id(p) for p in groups[1]["params"]} == backbone
    assert not backbone & {id(p) for p in groups[0]["params"]}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == sum(p.requires_grad for p in model.net.parameters())
    assert len(train.parameter_groups(model.net, 1e-3, None)) == 1
    with pytest.raises(ValueError, match="backbone_lrate"):
        train.make_options("order", backbone_lrate=0)


def hand_cut_crops(paths: list[Path]) -> torch.Tensor:
    """Each image resized (shorter side 40) and cut into 10 standardised 32 x 32 crops by hand."""
    crops = []
    for p in paths:
        a = np.asarray(Image.open(p).convert("RGB"))
        h, w = a.shape[:2]
        a = np.asarray(Image.fromarray(a).resize((40, 40 * h // w) if w <= h else (40 * w // h, 40), Image.BILINEAR))
        crops.append(np.stack([standardise(c).transpose(2, 0, 1) for c in ten_crops_by_hand(a, 32)]))
    return torch.from_numpy(np.stack(crops).copy())


@needs("torchvision", "vision")
def test_encode_image_files(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    config = ModelConfig(n_words=5, dim_word=4, dim=8, dim_image=512, backbone="resnet18", backbone_options=LOADER)
    run = tmp_path / "pixels"
    run.mkdir()
    Vocabulary(["a", "b", "c"]).save(run / runs.VOCAB)
    runs.save_json(run / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": {}})
    runs.save_tensors(run / runs.BEST, OrderEmbeddingModel(config).state_dict(), {})
    test = load_split(data, "test")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(test.image_files) + "\n")
    assert main(["encode", str(run), "--images", str(listing), "--image-root", str(test.image_root),
                 "--out", str(tmp_path / "im.npy")]) == 0
    got = np.load(tmp_path / "im.npy")
    model = api.load_model(run, device="cpu")
    with torch.no_grad():
        want = model.net.encode_image(hand_cut_crops(image_paths(test.image_files, test.image_root))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    (tmp_path / "bad.txt").write_text("no-such-image.jpg\n")
    assert main(["encode", str(run), "--images", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "x.npy")]) == 2
    assert "no-such-image.jpg: image file not found" in capsys.readouterr().err
    features_run = tmp_path / "features"
    features_run.mkdir()
    plain = ModelConfig(n_words=5, dim_word=4, dim=8, dim_image=6)
    Vocabulary(["a", "b", "c"]).save(features_run / runs.VOCAB)
    runs.save_json(features_run / runs.CONFIG, {"kind": "caption-image", "model": plain.to_dict(), "train": {}})
    runs.save_tensors(features_run / runs.BEST, OrderEmbeddingModel(plain).state_dict(), {})
    assert main(["encode", str(features_run), "--images", str(listing), "--image-root", str(test.image_root),
                 "--out", str(tmp_path / "y.npy")]) == 2
    assert "extract-features" in capsys.readouterr().err


@needs("torchvision", "vision")
def test_training_and_evaluation_inputs(data: Path) -> None:
    s = load_split(data, "train")
    source = BackboneImageSource(image_paths(s.image_files, s.image_root), {**LOADER, "workers": 2})
    idx = np.array([0, 3, 5])
    torch.manual_seed(0)
    a, b = source.batch(idx, train=True), source.batch(idx, train=True)
    assert a.shape == (3, 3, 32, 32) and not torch.equal(a, b)  # random resized crops and flips
    e = source.batch(idx, train=False)
    assert e.shape == (3, 10, 3, 32, 32) and torch.equal(e, source.batch(idx, train=False))
    with pytest.raises(ValueError, match="set dim_image to 512"):
        train.trainer("order", data=str(data), backbone="resnet18", dim_image=300, backbone_options=LOADER, **TINY)
    assert main(["train", "--data", str(data), "--finetune"]) == 2
