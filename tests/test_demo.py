"""The main job in its quick form, end to end through the command line."""
import json

import pytest

from order_embedding.cli import main


@pytest.mark.slow
def test_quick_demo(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--quick", "--quiet", "--out", str(tmp_path / "demo"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hierarchy check" in printed and str(tmp_path / "demo" / "runs" / "order") in printed
    result = json.loads(out.read_text())
    for name in ("order", "symmetric"):
        r = result[name]
        assert set(r) >= {"t2i", "i2t", "hierarchy_accuracy", "precision_at_10", "run_dir"}
        assert set(r["precision_at_10"]) == {"all", "general", "specific"}
        assert all(0 <= v <= 100 for v in r["precision_at_10"].values())
        for direction in ("t2i", "i2t"):
            assert set(r[direction]) == {"R@1", "R@5", "R@10", "medr", "meanr"}
        # 1,000 test images: chance R@10 is 1 %; even the quick models retrieve well above it.
        assert r["t2i"]["R@10"] > 5 and r["i2t"]["R@10"] > 5
    # A symmetric measure cannot tell which caption is the general one: every pair ties.
    assert result["symmetric"]["hierarchy_accuracy"] == 50.0
    # The order model learns which caption is the more general one even at the quick scale.
    assert result["order"]["hierarchy_accuracy"] >= 75


def test_hierarchy_accuracy_on_hand_made_embeddings(monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    from order_embedding import demo

    vectors = {"a thing": [0.125, 0.125], "a red thing": [0.5, 0.25], "a red big thing": [0.75, 0.75],
               "a blue thing": [0.25, 0.75], "tie": [0.5, 0.5]}
    monkeypatch.setattr(demo, "encode_sentences",
                        lambda model, captions: np.array([vectors[c] for c in captions], dtype=np.float32))
    model = SimpleNamespace(config=SimpleNamespace(method="order"))
    pairs = [("a thing", "a red thing"), ("a red thing", "a red big thing"), ("a blue thing", "a red thing"),
             ("tie", "tie")]
    # E(g, s) = sum max(0, g - s)^2 against E(s, g): 0 < 0.203 and 0 < 0.313 are right; the blue thing is not
    # below the red one (0.25 > 0.0625), wrong; the same caption twice ties and counts half.
    expected = [1.0, 1.0, 0.0, 0.5]
    assert demo.hierarchy_accuracy(model, pairs) == pytest.approx(100 * np.mean(expected))
    model.config.method = "cosine"
    assert demo.hierarchy_accuracy(model, pairs) == 50.0


def test_demo_scores_the_mean_over_test_folds(tmp_path, monkeypatch):
    """A tiny scale with three test folds: each figure is the mean of the folds' own figures, and a fold's R@1
    is that of its images and captions alone, recomputed here from the model's embeddings."""
    import numpy as np
    from helpers import order_penalty

    from order_embedding import demo
    from order_embedding.data import load_split
    from order_embedding.inference import encode_split, load_model

    monkeypatch.setattr(demo, "QUICK", {**demo.QUICK, "n_train": 24, "n_dev": 8, "n_test": 24, "dim": 8,
                                        "dim_word": 6, "max_epochs": 1})
    monkeypatch.setattr(demo, "MODEL", {**demo.MODEL, "batch_size": 8, "dim_image": 8, "cnn_width": 4})
    monkeypatch.setattr(demo, "FOLD_SIZE", 8)
    result = demo.run_demo(tmp_path / "demo", quick=True, verbose=False)
    assert result["test_images"] == 24
    test = load_split(tmp_path / "demo" / "data", "test")
    model = load_model(result["order"]["run_dir"])
    own_r1 = []
    for k in range(3):
        s, im = encode_split(model, test.fold(k, 8))
        errors = order_penalty(s, im)  # captions x images; caption c was written for image c // 5
        caption_rank = np.argsort(errors, axis=1, kind="stable")
        image_rank = np.argsort(errors.T, axis=1, kind="stable")
        t2i = 100 * np.mean(caption_rank[:, 0] == np.arange(40) // 5)
        i2t = 100 * np.mean(image_rank[:, 0] // 5 == np.arange(8))
        own_r1.append((t2i, i2t))
    folds = result["order"]["folds"]
    assert len(folds) == 3
    for (t2i, i2t), fold in zip(own_r1, folds):
        assert fold["t2i"]["R@1"] == pytest.approx(t2i, abs=0.01) and fold["i2t"]["R@1"] == pytest.approx(i2t, abs=0.01)
    assert result["order"]["t2i"]["R@1"] == pytest.approx(np.mean([t for t, _ in own_r1]), abs=0.01)
    assert result["order"]["i2t"]["R@1"] == pytest.approx(np.mean([i for _, i in own_r1]), abs=0.01)
    for key in ("all", "general", "specific"):
        mean = np.mean([f["precision_at_10"][key] for f in folds])
        assert result["order"]["precision_at_10"][key] == pytest.approx(mean, abs=0.01)
    assert "mean over 3 folds of 8" in demo.format_demo(result)
