"""The original driver's optimisation rules (reference section 8) against direct NumPy transcriptions."""
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, write_tiny_dataset

from order_embedding import optim, runs, train
from order_embedding.loss import contrastive_loss
from order_embedding.model import ModelConfig, OrderEmbeddingModel


def original_tensors(grads: dict[str, np.ndarray], hidden: int) -> dict[str, np.ndarray]:
    """The gradients split by hand into the original's nine tensors (its layout: inputs x outputs)."""
    g = grads
    return {
        "Wemb": g["text.embedding.weight"],
        "encoder_W": g["text.gru.weight_ih_l0"][: 2 * hidden].T,
        "encoder_b": g["text.gru.bias_ih_l0"][: 2 * hidden],
        "encoder_U": g["text.gru.weight_hh_l0"][: 2 * hidden].T,
        "encoder_Wx": g["text.gru.weight_ih_l0"][2 * hidden:].T,
        "encoder_bx": g["text.gru.bias_ih_l0"][2 * hidden:],
        "encoder_Ux": g["text.gru.weight_hh_l0"][2 * hidden:].T,
        "ff_image_W": g["image.fc.weight"].T,
        "ff_image_b": g["image.fc.bias"],
    }


def from_original(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The nine tensors put back into PyTorch's fused layout."""
    return {
        "text.embedding.weight": t["Wemb"],
        "text.gru.weight_ih_l0": np.concatenate([t["encoder_W"].T, t["encoder_Wx"].T]),
        "text.gru.bias_ih_l0": np.concatenate([t["encoder_b"], t["encoder_bx"]]),
        "text.gru.weight_hh_l0": np.concatenate([t["encoder_U"].T, t["encoder_Ux"].T]),
        "image.fc.weight": t["ff_image_W"].T,
        "image.fc.bias": t["ff_image_b"],
    }


def maxnorm(t: np.ndarray, threshold: float) -> np.ndarray:
    """The original's ``utils.maxnorm`` in float64."""
    t = t.astype(np.float64)
    norm = (t**2).sum()
    return t / np.sqrt(norm) * threshold if norm > threshold**2 else t


def adam_original_numpy(p, grads, lr, state):
    """One update of reference section 8, transcribed literally (float64)."""
    t = state["t"] = state.get("t", 0) + 1
    m = state["m"] = 0.1 * grads + 0.9 * state.get("m", 0.0)
    v = state["v"] = 0.001 * grads**2 + 0.999 * state.get("v", 0.0)
    lr_t = lr * np.sqrt(1 - 0.001**t) / (1 - 0.1**t)
    return p - lr_t * m / (np.sqrt(v) + 1e-8)


def real_gradients(config: ModelConfig, seed: int = 0) -> OrderEmbeddingModel:
    """A model with the gradients of a real contrastive loss on a random batch."""
    torch.manual_seed(seed)
    net = OrderEmbeddingModel(config)
    rng = np.random.default_rng(seed)
    tokens = torch.from_numpy(rng.integers(2, config.n_words, size=(6, 5)))
    tokens[:, -1] = 0
    lengths = torch.tensor([5, 4, 5, 3, 5, 2])
    if config.backbone is None:
        images = torch.from_numpy(rng.standard_normal((6, config.dim_image)).astype(np.float32))
    else:
        images = torch.from_numpy(rng.random((6, 3, 32, 32)).astype(np.float32))
    s, im = net(tokens, lengths, images)
    contrastive_loss(s, im, "order", 0.05).backward()
    return net


def grads_of(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: p.grad.double().numpy().copy() for n, p in net.named_parameters() if p.grad is not None}


def test_adam_original_matches_the_transcription_over_several_steps():
    rng = np.random.default_rng(3)
    a = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((4, 3)).astype(np.float32)))
    b = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(5).astype(np.float32)))
    opt = optim.AdamOriginal([{"params": [a], "lr": 0.01}, {"params": [b], "lr": 0.003}])
    ref = {"a": a.detach().double().numpy().copy(), "b": b.detach().double().numpy().copy()}
    states = {"a": {}, "b": {}}
    for step in range(12):
        ga = rng.standard_normal((4, 3)).astype(np.float32) * (10.0 if step == 5 else 1.0)
        gb = rng.standard_normal(5).astype(np.float32)
        a.grad, b.grad = torch.from_numpy(ga), torch.from_numpy(gb)
        opt.step()
        ref["a"] = adam_original_numpy(ref["a"], ga.astype(np.float64), 0.01, states["a"])
        ref["b"] = adam_original_numpy(ref["b"], gb.astype(np.float64), 0.003, states["b"])
        np.testing.assert_allclose(a.detach().numpy(), ref["a"], rtol=2e-6, atol=1e-7, err_msg=f"step {step + 1}")
        np.testing.assert_allclose(b.detach().numpy(), ref["b"], rtol=2e-6, atol=1e-7, err_msg=f"step {step + 1}")
    assert float(opt.state[a]["step"]) == 12


def test_adam_original_first_step_is_larger_than_textbook_adam():
    """Section 8: at t = 1 the original moves each coordinate by lr * sqrt(0.999) / 0.9 * 0.1 / sqrt(0.001),
    3.51 lr; textbook Adam by lr."""
    g = torch.tensor([0.5, -2.0])
    steps = {}
    for name in ("adam_original", "adam"):
        p = torch.nn.Parameter(torch.zeros(2))
        opt = optim.make_optimizer(name, [{"params": [p], "lr": 0.001}], 0.001)
        p.grad = g.clone()
        opt.step()
        steps[name] = p.detach().abs()
    # original: lr * sqrt(1 - 0.001) / 0.9 * 0.1 g / (sqrt(0.001) |g|) = lr * 0.3514
    np.testing.assert_allclose(steps["adam_original"].numpy(), 0.001 * np.sqrt(0.999) / 0.9 * 0.1 / np.sqrt(0.001),
                               rtol=1e-5)
    np.testing.assert_allclose(steps["adam"].numpy(), 0.001, rtol=1e-4)


def test_make_optimizer_rejects_unknown_names():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="optimizer 'sgd' is not supported"):
        optim.make_optimizer("sgd", [{"params": [p]}], 0.1)


def test_per_tensor_clipping_is_the_originals_nine_tensors():
    hidden = 5
    net = real_gradients(ModelConfig(n_words=20, dim_word=6, dim=hidden, dim_image=7))
    before = grads_of(net)
    nine = original_tensors(before, hidden)
    norms = {k: float(np.sqrt((t**2).sum())) for k, t in nine.items()}
    clip = 1.0
    # gates below the threshold, the candidate above it: a fused clip would shrink the gates too
    assert norms["encoder_U"] < clip < norms["encoder_Ux"] and norms["encoder_W"] < clip < norms["encoder_Wx"]
    assert len(optim.clip_pieces(net)) == 9
    optim.clip_gradients(net, clip, "tensor")
    expected = from_original({k: maxnorm(t, clip) for k, t in nine.items()})
    after = grads_of(net)
    assert set(after) == set(expected)  # bias_hh is frozen: no gradient
    for name, value in expected.items():
        np.testing.assert_allclose(after[name], value, rtol=1e-5, atol=1e-8, err_msg=name)
    np.testing.assert_array_equal(after["text.gru.weight_hh_l0"][:10], before["text.gru.weight_hh_l0"][:10])


def test_per_tensor_clipping_of_a_pixel_backbone_is_tensor_by_tensor():
    net = real_gradients(ModelConfig(n_words=20, dim_word=6, dim=5, dim_image=7, backbone="small_cnn",
                                     backbone_options={"image_size": 32, "width": 4}))
    before = grads_of(net)
    backbone = {n: g for n, g in before.items() if n.startswith("image.backbone.")}
    assert len(backbone) == 18  # 4 blocks x (conv weight, bias, BatchNorm weight, bias) + linear weight, bias
    assert len(optim.clip_pieces(net)) == 9 + 18
    clip = float(np.median([np.sqrt((g**2).sum()) for g in backbone.values()]))
    optim.clip_gradients(net, clip, "tensor")
    after = grads_of(net)
    for name, g in backbone.items():
        np.testing.assert_allclose(after[name], maxnorm(g, clip), rtol=1e-5, atol=1e-8, err_msg=name)
    for name, value in from_original({k: maxnorm(t, clip) for k, t in original_tensors(before, 5).items()}).items():
        np.testing.assert_allclose(after[name], value, rtol=1e-5, atol=1e-8, err_msg=name)


def test_global_clipping_and_no_clipping():
    net = real_gradients(ModelConfig(n_words=20, dim_word=6, dim=5, dim_image=7))
    before = grads_of(net)
    total = np.sqrt(sum((g**2).sum() for g in before.values()))
    optim.clip_gradients(net, total / 4, "global")
    for name, g in grads_of(net).items():
        np.testing.assert_allclose(g, before[name] / 4, rtol=1e-5, atol=1e-9, err_msg=name)
    optim.clip_gradients(net, 0.0, "tensor")  # grad_clip 0: nothing changes
    for name, g in grads_of(net).items():
        np.testing.assert_allclose(g, before[name] / 4, rtol=1e-5, atol=1e-9, err_msg=name)


def test_scheduled_lr_is_vsepp_step_schedule():
    assert [optim.scheduled_lr(0.2, 15, e) for e in (0, 14, 15, 29, 30)] == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])
    assert optim.scheduled_lr(0.2, None, 500) == 0.2


def record_updates(monkeypatch) -> list[dict]:
    """Patch the trainer so every update records parameters, raw gradients and learning rates before clipping."""
    seen: list[dict] = []
    made = {}
    real_make, real_clip = train.make_optimizer, train.clip_gradients

    def make(*args, **kwargs):
        made["opt"] = real_make(*args, **kwargs)
        return made["opt"]

    def clip(net, grad_clip, mode):
        seen.append({"params": {n: p.detach().double().numpy().copy() for n, p in net.named_parameters()},
                     "grads": grads_of(net), "lrs": [g["lr"] for g in made["opt"].param_groups],
                     "clip": (grad_clip, mode)})
        real_clip(net, grad_clip, mode)

    monkeypatch.setattr(train, "make_optimizer", make)
    monkeypatch.setattr(train, "clip_gradients", clip)
    return seen


def test_three_updates_of_the_order_preset_are_the_original_driver(tmp_path, monkeypatch):
    """trainer('order', ...) = per-tensor clipping of the nine tensors at 2.0, then the original's Adam."""
    data = write_tiny_dataset(tmp_path / "data", n_train=48)
    seen = record_updates(monkeypatch)
    opts = {**TINY_MODEL, "dim": 12, "lrate": 0.01, "validFreq": 100}
    run = train.trainer("order", name="o", save_dir=str(tmp_path / "runs"), data=str(data), max_epochs=1, **opts)
    assert len(seen) == 3 and all(u["clip"] == (2.0, "tensor") for u in seen)
    assert any(np.sqrt((g**2).sum()) > 2.0 for g in original_tensors(seen[0]["grads"], 12).values())  # clipping acts
    params = seen[0]["params"]
    states: dict[str, dict] = {}
    for update in seen:
        clipped = from_original({k: maxnorm(t, 2.0) for k, t in original_tensors(update["grads"], 12).items()})
        params = {n: adam_original_numpy(p, clipped[n], 0.01, states.setdefault(n, {})) if n in clipped else p
                  for n, p in params.items()}
    final, _ = runs.load_tensors(run / runs.LAST)
    for name, value in params.items():
        np.testing.assert_allclose(final[f"model.{name}"].double().numpy(), value, rtol=1e-5, atol=2e-7, err_msg=name)
    assert not np.allclose(final["model.image.fc.weight"].numpy(), seen[0]["params"]["image.fc.weight"])


def test_lr_update_divides_the_rate_by_ten_per_period(tiny_data, tmp_path, monkeypatch):
    seen = record_updates(monkeypatch)
    train.trainer("symmetric", name="s", save_dir=str(tmp_path), data=str(tiny_data), max_epochs=3, lr_update=2,
                  lrate=0.01, optimizer="adam", **TINY_MODEL)
    assert [round(u["lrs"][0], 12) for u in seen] == [0.01] * 8 + [0.001] * 4  # 4 updates an epoch
    with pytest.raises(ValueError, match="lr_update must be a whole number"):
        train.make_options("order", lr_update=0)


def test_presets_use_the_originals_adam_and_resume_keeps_the_optimizer(tiny_data, tmp_path):
    for preset in ("order", "symmetric"):
        options = train.make_options(preset)
        assert options["optimizer"] == "adam_original" and options["lr_update"] is None
        assert options["clip_mode"] == "tensor" and options["grad_clip"] == 2.0
    opts = dict(data=str(tiny_data), save_dir=str(tmp_path), name="r", **TINY_MODEL)
    train.trainer("order", max_epochs=1, optimizer="adam", **opts)
    with pytest.raises(ValueError, match="trained with optimizer 'adam'"):
        train.trainer("order", max_epochs=2, resume=True, **opts)
