"""The trainer end to end on tiny data: run folder, learning, resume, clipping, NaN stop."""
import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from order_embedding import inference as api
from order_embedding import optim, runs, train
from order_embedding.evaluation import ranking_eval_5fold


@pytest.mark.slow
def test_run_folder_and_learning(tiny_data, tmp_path):
    run = train.trainer("order", name="o", save_dir=str(tmp_path / "runs"), data=str(tiny_data), max_epochs=30,
                        lrate=0.01, **TINY_MODEL)
    for name in (runs.CONFIG, runs.VOCAB, runs.METRICS, runs.BEST, runs.LAST):
        assert (run / name).exists(), name
    cfg = json.loads((run / runs.CONFIG).read_text())
    assert cfg["kind"] == "caption-image" and cfg["model"]["method"] == "order" and cfg["train"]["margin"] == 0.05
    records = list(runs.read_metrics(run))
    valid = [r for r in records if r["event"] == "valid"]
    assert [r for r in records if r["event"] == "train"] and valid
    assert valid[0]["uidx"] == 4 and all(set(r["t2i"]) == {"R@1", "R@5", "R@10", "medr", "meanr"} for r in valid)
    # 8 classes among 20 dev images: chance R@1 is about 5%; a trained model finds the class.
    best = max(valid, key=lambda r: r["score"])
    assert best["best"] and best["t2i"]["R@10"] > 80 and best["score"] > valid[0]["score"]
    model = api.load_model(run)
    result = ranking_eval_5fold(model, split="dev")
    assert result["t2i"]["R@10"] == pytest.approx(best["t2i"]["R@10"])  # the saved model is the best one
    s = api.encode_sentences(model, ["a red round thing", "zzz unknown words"])
    assert s.shape == (2, 12) and (s >= 0).all() and np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)


def test_load_model_reads_last_checkpoint(tiny_data, tmp_path):
    from safetensors.torch import load_file
    run = train.trainer("order", name="o", save_dir=str(tmp_path), data=str(tiny_data), max_epochs=2, **TINY_MODEL)
    saved = load_file(str(run / runs.LAST))  # parameters stored as model.<name> beside optim.* and rng.torch
    model = api.load_model(run, checkpoint=runs.LAST)
    params = model.net.state_dict()
    assert set(params) == {k[len("model."):] for k in saved if k.startswith("model.")}
    for name, value in params.items():
        assert torch.equal(value, saved[f"model.{name}"]), name


@pytest.mark.parametrize("optimizer", ["adam_original", "adam"])
def test_resume_equals_uninterrupted(tiny_data, tmp_path, optimizer):
    opts = dict(data=str(tiny_data), seed=7, optimizer=optimizer, lr_update=2, **TINY_MODEL)
    whole = train.trainer("symmetric", name="whole", save_dir=str(tmp_path), max_epochs=3, **opts)
    train.trainer("symmetric", name="part", save_dir=str(tmp_path), max_epochs=1, **opts)
    part = train.trainer("symmetric", name="part", save_dir=str(tmp_path), max_epochs=3, resume=True, **opts)
    a, _ = runs.load_tensors(whole / runs.LAST)
    b, _ = runs.load_tensors(part / runs.LAST)
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match="already holds a run"):
        train.trainer("symmetric", name="whole", save_dir=str(tmp_path), max_epochs=1, **opts)


def test_nan_loss_stops_and_keeps_checkpoint(tiny_data, tmp_path, monkeypatch):
    real = train.contrastive_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(train, "contrastive_loss", flaky)
    with pytest.raises(train.TrainingError, match="loss became nan at update 6"):
        train.trainer("order", name="n", save_dir=str(tmp_path), data=str(tiny_data), max_epochs=5, **TINY_MODEL)
    model = api.load_model(tmp_path / "n")  # the checkpoint of update 4 is intact
    assert all(torch.isfinite(p).all() for p in model.net.parameters())


def test_per_tensor_clipping_matches_formula():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5 -> rescaled to 2
    b.grad = torch.tensor([0.6, 0.8])  # norm 1 -> unchanged
    optim.clip_gradients(torch.nn.ParameterList([a, b]), 2.0, "tensor")
    torch.testing.assert_close(a.grad, torch.tensor([1.2, 1.6, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([0.6, 0.8]))
    a.grad = torch.tensor([3.0, 4.0, 0.0])
    b.grad = torch.tensor([0.0, 0.0])
    optim.clip_gradients(torch.nn.ParameterList([a, b]), 1.0, "global")  # global norm 5 -> everything scaled by 1/5
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))


def test_options_validation():
    assert train.make_options("symmetric")["margin"] == 0.2 and not train.make_options("symmetric")["abs"]
    assert train.make_options("order", margin=0.1)["margin"] == 0.1
    with pytest.raises(ValueError, match="unknown hyperparameter.*lerning_rate"):
        train.make_options("order", lerning_rate=1)
    with pytest.raises(ValueError, match="unknown preset"):
        train.make_options("fancy")
