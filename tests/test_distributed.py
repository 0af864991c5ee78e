"""Two gloo processes on a global batch against one process on the same batch."""
import multiprocessing
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from helpers import free_port

from order_embedding import distributed, runs
from order_embedding.batching import pad_batch
from order_embedding.loss import contrastive_loss
from order_embedding.model import ModelConfig, OrderEmbeddingModel
from order_embedding.optim import clip_gradients
from order_embedding.train import trainer

CONFIG = ModelConfig(n_words=20, dim_word=6, dim=8, dim_image=12)
TOL = 1e-5


def run_processes(fn, *args, world: int = 2) -> None:
    """``fn(rank, world, *args)`` in ``world`` processes forked from one server that imported the package once."""
    multiprocessing.set_forkserver_preload(["torch", "order_embedding.train", __name__])
    mp.start_processes(fn, args=(world, *args), nprocs=world, join=True, start_method="forkserver")


def join_group(rank: int, world: int, port: int) -> distributed.Context:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    return distributed.setup("cpu")


def global_batch(n: int = 7):
    rng = np.random.default_rng(5)
    sentences = [list(rng.integers(2, CONFIG.n_words, size=rng.integers(1, 6))) for _ in range(n)]
    features = rng.standard_normal((n, CONFIG.dim_image)).astype(np.float32)
    return sentences, features


def one_step(net: torch.nn.Module, forward, sentences, features, total: int):
    """Loss, gradients and updated parameters of one Adam step on the gathered batch."""
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    tokens, lengths = pad_batch(sentences)
    s, im = forward(tokens, lengths, torch.from_numpy(features))
    s, im = distributed.all_gather_with_grad(s, total), distributed.all_gather_with_grad(im, total)
    loss = contrastive_loss(s, im, "order", 0.05)
    loss.backward()
    grads = {f"grad.{n}": p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    clip_gradients(net, 2.0)
    optimizer.step()
    return {"loss": loss.detach().reshape(1), **grads, **{f"param.{n}": p.detach().clone() for n, p in net.named_parameters()}}


def step_worker(rank: int, world: int, port: int, out: str) -> None:
    ctx = join_group(rank, world, port)
    torch.manual_seed(0)
    net = OrderEmbeddingModel(CONFIG)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    sentences, features = global_batch()
    mine = distributed.shard(len(sentences))
    result = one_step(net, ddp, sentences[mine], features[mine], len(sentences))
    runs.save_tensors(os.path.join(out, f"rank{rank}.safetensors"), result)
    distributed.teardown(ctx)


def test_shards_cover_the_batch_in_order():
    for n, world in [(7, 2), (128, 3), (5, 5), (9, 4)]:
        parts = [distributed.shard(n, r, world) for r in range(world)]
        assert np.concatenate([np.arange(n)[p] for p in parts]).tolist() == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
    assert distributed.shard(6) == slice(0, 6)  # one process holds everything


@pytest.mark.slow
def test_two_processes_match_one_process_step(tmp_path):
    run_processes(step_worker, free_port(), str(tmp_path))
    torch.manual_seed(0)
    net = OrderEmbeddingModel(CONFIG)
    sentences, features = global_batch()
    expected = one_step(net, net, sentences, features, len(sentences))
    assert expected["loss"].item() > 0
    for rank in range(2):
        got, _ = runs.load_tensors(tmp_path / f"rank{rank}.safetensors")
        assert set(got) == set(expected)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, atol=TOL, rtol=TOL, msg=f"rank {rank}: {key}")
    torch.manual_seed(0)
    start = dict(OrderEmbeddingModel(CONFIG).named_parameters())
    for name, p in start.items():  # the step moved every trained parameter
        assert p.requires_grad == (not torch.equal(expected[f"param.{name}"], p.detach())), name


def write_data(root) -> None:
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(15)]
    for split, n_images in (("train", 11), ("dev", 6)):
        lines = [" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(2 * n_images)]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        feats = rng.standard_normal((n_images, 12)).astype(np.float32)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        (root / "images" / "10crop").mkdir(parents=True, exist_ok=True)
        np.save(root / "images" / "10crop" / f"{split}.npy", feats)


def train_options(root, name: str, epochs: int, **extra):
    return dict(data=str(root / "data"), save_dir=str(root / "runs"), name=name, max_epochs=epochs, batch_size=5,
                dim=8, dim_word=6, dim_image=12, dispFreq=1, validFreq=3, device="cpu", verbose=False, **extra)


def trainer_worker(rank: int, world: int, port: int, root: str) -> None:
    from pathlib import Path

    ctx = join_group(rank, world, port)
    root = Path(root)
    trainer(**train_options(root, "two", 2))
    trainer(**train_options(root, "two", 3, resume=True))  # resumes from last.safetensors
    distributed.teardown(ctx)


@pytest.mark.slow
def test_two_process_training_and_resume_match_one_process(tmp_path):
    (tmp_path / "data").mkdir()
    write_data(tmp_path / "data")
    run_processes(trainer_worker, free_port(), str(tmp_path))
    trainer(**train_options(tmp_path, "one", 3))
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    loss = {d: [r["loss"] for r in runs.read_metrics(d) if r["event"] == "train"] for d in (one, two)}
    # 11 images in batches of 5: two updates per epoch (the single leftover pair is no batch)
    assert len(loss[one]) == 6
    np.testing.assert_allclose(loss[two], loss[one], rtol=TOL, atol=TOL)
    valid = {d: [r["uidx"] for r in runs.read_metrics(d) if r["event"] == "valid"] for d in (one, two)}
    assert valid[one] == [3, 6]
    assert valid[two] == [3, 4, 6]  # the first session validated at its end (update 4) before the resume
    a, _ = runs.load_tensors(one / runs.LAST)
    b, _ = runs.load_tensors(two / runs.LAST)
    assert set(a) == set(b) and any(k.startswith("optim.") for k in a)
    for key in a:
        if key.startswith(("model.", "optim.")):
            torch.testing.assert_close(b[key], a[key], atol=TOL, rtol=TOL, msg=key)
    assert runs.load_json(two / runs.CONFIG)["model"] == runs.load_json(one / runs.CONFIG)["model"]
