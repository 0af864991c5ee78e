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
