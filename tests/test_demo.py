"""The main job: the quick demo end to end, and a tiny scale of it checked against recomputed figures."""
import json
from pathlib import Path

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
        assert set(r) >= {"t2i", "i2t", "hierarchy", "precision_at_10", "average_precision", "roc", "run_dir"}
        assert set(r["precision_at_10"]) == {"all", "general", "specific"}
        assert all(0 <= v <= 100 for v in r["precision_at_10"].values())
        for direction in ("t2i", "i2t"):
            assert set(r[direction]) == {"R@1", "R@5", "R@10", "medr", "meanr"}
        # 1,000 test images: chance R@10 is 1 %; even the quick models retrieve well above it.
        assert r["t2i"]["R@10"] > 5 and r["i2t"]["R@10"] > 5
        # A threshold on the error tells true caption-image pairs from false ones better than chance.
        assert r["roc"]["auc"] > 0.6
    # A symmetric measure cannot tell which caption is the general one: every pair ties.
    assert set(result["symmetric"]["hierarchy"].values()) == {50.0}
    assert result["hierarchy_pairs"]["length-controlled"] >= 500


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


def tiny_scale():
    """A demo small enough for a test: 24 test images in three folds of 8."""
    from order_embedding import demo

    return demo.DemoScale(name="tiny", out="unused", n_train=24, n_dev=8, n_test=24, image_size=48, dim=8,
                          dim_word=6, max_epochs=1, lr_update=None, optimizer="adam_original",
                          lrate=0.002, validation_epochs=0, dim_image=8, cnn_width=4, batch_size=8, fold_size=8,
                          training="a tiny schedule for the tests")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    from order_embedding import demo

    out = tmp_path_factory.mktemp("tiny") / "demo"
    return out, demo.run_demo(out, scale=tiny_scale(), verbose=False)


def test_demo_scores_the_mean_over_test_folds(tiny_demo):
    """Three test folds: each figure is the mean of the folds' own figures, and a fold's R@1 is that of its
    images and captions alone, recomputed here from the model's embeddings."""
    import numpy as np
    from helpers import order_penalty

    from order_embedding import demo
    from order_embedding.data import load_split
    from order_embedding.inference import encode_split, load_model

    out, result = tiny_demo
    assert result["test_images"] == 24
    test = load_split(out / "data", "test")
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
    assert result["order"]["roc"]["auc"] == pytest.approx(np.mean([f["roc_auc"] for f in folds]), abs=1e-3)
    printed = demo.format_demo(result)
    assert "mean over 3 folds of 8" in printed and "both models trained with a tiny schedule for the tests" in printed


def test_average_precision_and_roc_of_a_fold_recomputed(tiny_demo):
    """The first fold's mAP and ROC AUC, recomputed from the model's errors and the truth checker one caption
    and one image at a time."""
    import numpy as np
    from helpers import order_penalty

    from order_embedding.data import load_split
    from order_embedding.data.shapes_truth import is_true_of, load_scenes, parse_caption
    from order_embedding.inference import encode_split, load_model

    out, result = tiny_demo
    test = load_split(out / "data", "test")
    captions, scenes = load_scenes(out / "data" / "dataset_shapes.json", "test")
    model = load_model(result["order"]["run_dir"])
    s, im = encode_split(model, test.fold(0, 8))
    errors = order_penalty(s, im)
    truth = np.array([[is_true_of(parse_caption(c), scene) for scene in scenes[:8]] for c in captions[:40]])
    aps = []
    for e, t in zip(errors, truth):
        ranked = t[np.argsort(e, kind="stable")]
        aps.append(np.mean([ranked[:k + 1].mean() for k in np.flatnonzero(ranked)]))
    assert result["order"]["folds"][0]["average_precision"]["all"] == pytest.approx(100 * np.mean(aps), abs=0.01)
    true, false = errors[truth], errors[~truth]
    auc = np.mean((true[:, None] < false[None, :]) + 0.5 * (true[:, None] == false[None, :]))
    assert result["order"]["folds"][0]["roc_auc"] == pytest.approx(auc, abs=1e-4)


def test_results_json_in_each_run_folder(tiny_demo):
    _, result = tiny_demo
    for name, other in (("order", "symmetric"), ("symmetric", "order")):
        saved = json.loads((Path(result[name]["run_dir"]) / "results.json").read_text())
        assert saved["kind"] == "demo" and saved["model"] == name and saved["seed"] == 0
        assert "mean over 3 folds of 8" in saved["protocol"]
        assert saved["hierarchy"] == result[name]["hierarchy"]
        assert saved["baselines"]["word_count"] == result["baselines"]["word_count"]
        assert saved["baselines"][other]["roc_auc"] == result[other]["roc"]["auc"]
        roc = saved["roc"]
        assert len(roc["fpr"]) == len(roc["tpr"]) <= 201 and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1


def test_word_count_rule_on_hand_made_pairs():
    from order_embedding.demo import word_count_accuracy

    pairs = [("a star", "a red star"), ("a red star", "a star"), ("a shape", "a star"),
             ("exactly one shape : a star", "there is a red star")]  # ":" is not a word: 5 words each
    assert word_count_accuracy(pairs) == pytest.approx(100 * (1 + 0 + 0.5 + 0.5) / 4)


def test_a_folder_of_other_settings_is_refused(tiny_demo, tmp_path, capsys):
    """Another seed or scale on an existing demo folder: one line naming the folder and what differs; the
    folder is left as it was. --overwrite replaces the demo's world and models."""
    import dataclasses

    from order_embedding import demo

    out, _ = tiny_demo
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(demo.DemoFolderError, match=f"{out}: its world was made with seed 0 \\(not 1\\)"):
        demo.run_demo(out, scale=tiny_scale(), seed=1, verbose=False)
    with pytest.raises(demo.DemoFolderError, match="scale 'tiny' \\(not 'quick'\\)"):
        demo.run_demo(out, scale=demo.QUICK, verbose=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # Models trained otherwise than the scale says, in a world that matches it.
    other = dataclasses.replace(tiny_scale(), dim=10)
    with pytest.raises(demo.DemoFolderError, match="its order model was trained with dim 8 \\(not 10\\)"):
        demo.run_demo(out, scale=other, verbose=False)
    # Through the command line: one line, exit status 1.
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--overwrite" in err[0]
    # A world without its record is refused too.
    copy = tmp_path / "copy"
    (copy / "data").mkdir(parents=True)
    (copy / "data" / "dataset_shapes.json").write_text((out / "data" / "dataset_shapes.json").read_text())
    with pytest.raises(demo.DemoFolderError, match="no world.json"):
        demo.run_demo(copy, scale=tiny_scale(), verbose=False)
    kept = tmp_path / "copy" / "notes.txt"
    kept.write_text("mine")
    result = demo.run_demo(copy, scale=tiny_scale(), seed=2, verbose=False, overwrite=True)
    assert result["seed"] == 2 and kept.read_text() == "mine"
    assert json.loads((copy / "data" / "world.json").read_text())["seed"] == 2


def test_threads_option(monkeypatch, capsys):
    import os

    from order_embedding.cli import threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    # /proc/stat's busy and total time before and after the sample: 1.4 of 4 cores busy, then 3.9
    samples = iter([(100.0, 400.0), (135.0, 500.0), (100.0, 400.0), (197.5, 500.0)])
    monkeypatch.setattr(threads, "cpu_times", lambda: next(samples))
    assert threads.idle_cores() == 3
    assert threads.idle_cores() == 1  # never fewer than one
    monkeypatch.setattr(threads, "cpu_times", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (2.2, 0.0, 0.0))
    assert threads.idle_cores() == 2
    assert threads.thread_count("auto") == "auto" and threads.thread_count("2") == 2
    for bad in ("0", "-1", "two", "1.5"):
        assert main(["demo", "--threads", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--threads" in err[0] and bad in err[0], err


def test_idle_cores_sees_a_busy_process():
    import os
    import subprocess
    import sys

    from order_embedding.cli import threads

    if threads.cpu_times() is None or len(os.sched_getaffinity(0)) != 2:
        pytest.skip("needs /proc/stat and two usable cores")
    if threads.idle_cores() != 2:
        pytest.skip("the machine is busy with other work")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert threads.idle_cores() == 1
    finally:
        busy.kill()
        busy.wait()


def test_validation_schedule_of_the_scales():
    from order_embedding import demo

    # 8,000 images in batches of 128: 62 full batches and one of 64, 63 updates an epoch; every 4 epochs.
    assert demo.train_options(demo.FULL)["validFreq"] == 4 * 63
    # 2,000 images: 15 full batches and one of 80; validated once, after the last of 3 epochs.
    assert demo.train_options(demo.QUICK)["validFreq"] == 3 * 16
