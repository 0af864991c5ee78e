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
