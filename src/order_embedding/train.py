"""Training: the original driver's ``trainer(**kwargs)``, read top to bottom.

Hyperparameters keep the original names (``dim``, ``dim_word``, ``margin``,
``lrate``, ``grad_clip``, ``validFreq`` ...), each declared once in
:mod:`order_embedding.options`. Every ``validFreq`` updates the dev
fold is evaluated and the parameters are kept when text-to-image R@1+R@5+R@10 is
the best so far; ``last.safetensors`` always holds enough to resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, loop, runs
from .batching import batches_per_epoch, epoch_batches, pad_batch
from .data import FOLD_SIZE, Split, load_split, resolve_data_dir
from .data.matches import KnownMatches, load_matches
from .evaluation import evaluate_embeddings
from .inference import (
    LoadedModel,
    default_device,
    encode_images,
    encode_sentences,
    load_model,
    split_images,
    split_input,
)
from .loop import TrainingError as TrainingError
from .loop import TrainState as TrainState
from .loss import contrastive_loss
from .model import ModelConfig, OrderEmbeddingModel
from .optim import clip_gradients, flush_denormals, make_optimizer, scheduled_lr
from .options import NOT_RECORDED, changed_on_resume, make_options
from .vocab import Vocabulary


def parameter_groups(net: OrderEmbeddingModel, lrate: float, backbone_lrate: float | None) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: the pixel backbone's at ``backbone_lrate`` (when given
    and the backbone trains), everything else at ``lrate``."""
    backbone = net.image.backbone
    own = {id(p) for p in backbone.parameters()} if backbone is not None and backbone_lrate is not None else set()
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in own]
    tuned = [p for p in net.parameters() if p.requires_grad and id(p) in own]
    groups = [{"params": rest, "lr": lrate}]
    if tuned and backbone_lrate is not None:
        groups.append({"params": tuned, "lr": float(backbone_lrate)})
    return groups


def validate(model: LoadedModel, dev: Split, dev_images: np.ndarray) -> dict[str, Any]:
    """Both directions' metrics on the dev fold, and the selection score (t2i R@1+R@5+R@10)."""
    s = encode_sentences(model, dev.captions)
    im = encode_images(model, dev_images, checked=True)  # validated when the split was read
    result = evaluate_embeddings(s, im, dev.cap2img, model.config.method)
    t = result["t2i"]
    return {**result, "score": t["R@1"] + t["R@5"] + t["R@10"]}


def _check_resume(run_dir: Path, opt: dict[str, Any]) -> dict[str, Any]:
    """The recorded config of a run being resumed; options that define the result must be the recorded ones."""
    cfg = runs.load_json(run_dir / runs.CONFIG)
    recorded = cfg.get("train") if isinstance(cfg, dict) else None
    if not isinstance(recorded, dict):
        raise runs.RunError(f"{run_dir / runs.CONFIG}: no 'train' section to resume from")
    changed = changed_on_resume(recorded, opt)
    if changed:
        shown = "; ".join(f"{name} {was!r}, not {given!r}" for name, was, given in changed)
        raise ValueError(f"{run_dir} was trained with {shown}: resume it with the recorded options or start a new run")
    return cfg


@flush_denormals()  # the Adam moments of words no batch uses decay towards the subnormal range
def trainer(preset: str | None = None, tensorboard: str | Path | None = None, **kwargs: Any) -> Path:
    """Train a caption-image model with the original's hyperparameter names; returns the run folder.

    The run folder is locked against a second writer while training; ``resume=True`` continues it from its
    last checkpoint (or from the start, when it was stopped before one was written). With ``tensorboard``, the
    metrics also go to that folder as TensorBoard scalars. Subnormal floats are flushed to zero on the calling
    thread while it runs (:func:`flush_denormals`).
    """
    opt = make_options(preset, **kwargs)
    dist = distributed.setup(opt["device"])  # one process, or this rank of a torchrun group
    writer = loop.tensorboard_writer(tensorboard) if dist.is_main else None
    run_dir = Path(opt["save_dir"]) / opt["name"]
    new = not run_dir.exists()
    lock = runs.lock_run(run_dir) if dist.is_main else None
    try:
        return _train(opt, dist, run_dir, writer)
    except BaseException:
        if new and lock is not None and [p.name for p in run_dir.iterdir()] == [runs.LOCK]:
            (run_dir / runs.LOCK).unlink()  # a run that failed before writing anything leaves no folder
            run_dir.rmdir()
        raise
    finally:
        if lock is not None:
            lock.close()
        if writer is not None:
            writer.close()


def _train(opt: dict[str, Any], dist: distributed.Context, run_dir: Path, writer: Any = None) -> Path:
    verbose = opt["verbose"] and dist.is_main
    device = torch.device(opt["device"]) if opt["device"] else default_device()
    started = (run_dir / runs.CONFIG).exists()
    if started and not opt["resume"]:
        raise ValueError(f"{run_dir} already holds a run; choose another name or pass resume=True")
    resuming = started and (run_dir / runs.LAST).exists()
    recorded_epochs = 0
    if started:
        recorded_epochs = _check_resume(run_dir, opt)["train"].get("max_epochs", 0)
    distributed.barrier()  # every rank has decided before rank 0 writes the run folder

    # Data and vocabulary
    data_dir = resolve_data_dir(opt["data"])
    train = load_split(data_dir, "train", cnn=opt["cnn"], image_root=opt["image_root"])
    dev_full = load_split(data_dir, opt["valid_split"], cnn=opt["cnn"], image_root=opt["image_root"])
    dev = dev_full.fold(0) if dev_full.n_images > FOLD_SIZE else dev_full
    if resuming:
        vocab = Vocabulary.load(run_dir / runs.VOCAB)
    else:
        vocab = Vocabulary.build(train.captions + dev_full.captions, n_words=opt["n_words"], lowercase=opt["lowercase"])
    train_ids = [vocab.encode(c) for c in train.captions]
    matches = load_matches(data_dir, train) if opt["true_matches"] else None
    if opt["backbone"] is None and train.features is not None and train.features.shape[1] != opt["dim_image"]:
        raise ValueError(f"training features are {train.features.shape[1]}-dimensional but dim_image is {opt['dim_image']}")

    # Model and optimizer
    torch.manual_seed(opt["seed"])
    config = ModelConfig(n_words=vocab.size, dim_word=opt["dim_word"], dim=opt["dim"], dim_image=opt["dim_image"],
                         method=opt["method"], abs=opt["abs"], encoder=opt["encoder"],
                         backbone=opt["backbone"], backbone_options=dict(opt["backbone_options"]))
    net = OrderEmbeddingModel(config).to(device)
    images = split_input(config, train, train=True, verbose=verbose)
    if opt["load_from"] and not resuming:
        net.load_state_dict(load_model(opt["load_from"], device="cpu").net.state_dict())
    groups = parameter_groups(net, opt["lrate"], opt["backbone_lrate"])
    forward = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    optimizer = make_optimizer(opt["optimizer"], groups, opt["lrate"])
    recorded = {k: v for k, v in opt.items() if k not in NOT_RECORDED}
    recorded.update(runs.data_record(opt["data"], data_dir, run_dir))
    model = LoadedModel(net, vocab, recorded, run_dir)
    trainee = CaptionImageTrainee(model, forward, optimizer, [g["lr"] for g in groups], opt, train, train_ids, images,
                                  dev, split_images(model, dev), world_size=dist.world_size, matches=matches)

    # Where training stands: the last checkpoint's state, or the start
    files = loop.RunFiles(run_dir, runs.LAST, is_main=dist.is_main, tensorboard=writer)
    rng = np.random.default_rng(opt["seed"])
    # the state was reached under the recorded max_epochs (a resume may lower it to stop sooner)
    epochs = max(opt["max_epochs"], recorded_epochs if isinstance(recorded_epochs, int) else 0)
    state, resumed = loop.start_state(files, trainee, rng, verbose,
                                      limits=(epochs, batches_per_epoch(train.n_images, opt["batch_size"])))
    if started and not resumed and verbose:
        tqdm.write(f"{run_dir} was stopped before its first checkpoint; starting it from the beginning")
    if dist.is_main:
        if not resumed:
            vocab.save(run_dir / runs.VOCAB)
        runs.save_json(run_dir / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": model.options})

    # Training
    net.train()
    schedule = loop.Schedule(opt["max_epochs"], opt["validFreq"], opt["dispFreq"], mean_loss=False)
    state = loop.train_loop(trainee, schedule, files, rng, state, resumed, verbose)
    if dist.is_main:
        loop.finish(run_dir, {"uidx": state.uidx, "epoch": state.epoch, "examples": state.examples,
                              "best_score": state.best_score, "best_uidx": state.best_uidx, "seconds": state.seconds})
    if verbose:
        tqdm.write(f"done: {state.uidx} updates, best dev score {state.best_score:.1f}; run folder {run_dir}")
    distributed.teardown(dist)
    return run_dir


class CaptionImageTrainee:
    """The caption-image model as :func:`loop.train_loop` trains it: the original driver's update."""

    def __init__(self, model: LoadedModel, forward: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 base_lrs: list[float], opt: dict[str, Any], train: Split, train_ids: list[list[int]],
                 images: Any, dev: Split, dev_images: Any, world_size: int = 1,
                 matches: KnownMatches | None = None) -> None:
        self.model, self.net, self.forward, self.optimizer = model, model.net, forward, optimizer
        self.base_lrs, self.opt, self.world_size = base_lrs, opt, world_size
        self.train, self.train_ids, self.images = train, train_ids, images
        self.dev, self.dev_images = dev, dev_images
        self.matches, self.device = matches, model.device

    def batches(self, epoch: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each image once with one random caption; a final batch too small to give every rank a pair is dropped."""
        drawn = epoch_batches(self.train.cap2img, self.train.n_images, self.opt["batch_size"], rng)
        return [b for b in drawn if len(b[0]) >= self.world_size]

    def learning_rates(self, state: loop.TrainState) -> list[float]:
        """Each group's rate, divided by 10 every ``lr_update`` epochs."""
        return [scheduled_lr(lr, self.opt["lr_update"], state.epoch) for lr in self.base_lrs]

    def loss(self, batch: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, int]:
        """The contrastive loss of the global batch (this rank encodes its share; embeddings are all-gathered)."""
        cap_idx, img_idx = batch
        mine = distributed.shard(len(cap_idx))  # this rank's rows of the global batch
        tokens, lengths = pad_batch([self.train_ids[i] for i in cap_idx[mine]])
        x = self.images.batch(img_idx[mine], train=True).to(self.device)
        s, im = self.forward(tokens.to(self.device), lengths, x)
        s, im = distributed.all_gather_with_grad(s, len(cap_idx)), distributed.all_gather_with_grad(im, len(cap_idx))
        opt = self.opt
        known = None if self.matches is None else torch.from_numpy(self.matches.block(cap_idx, img_idx)).to(self.device)
        return contrastive_loss(s, im, opt["method"], opt["margin"], opt["max_violation"], known), len(cap_idx)

    def step(self, loss: torch.Tensor) -> None:
        """Backward pass, gradient clipping and the optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(self.net, self.opt["grad_clip"], self.opt["clip_mode"])
        self.optimizer.step()

    def validate(self) -> dict[str, Any]:
        """Both directions' recall on the dev fold and the selection score."""
        self.net.eval()
        result = validate(self.model, self.dev, self.dev_images)
        self.net.train()
        return result

    def describe(self, result: dict[str, Any]) -> str:
        """Recall of both directions and the score."""
        t, i = result["t2i"], result["i2t"]
        return (f"t2i R@1/5/10 {t['R@1']:.1f}/{t['R@5']:.1f}/{t['R@10']:.1f} "
                f"i2t {i['R@1']:.1f}/{i['R@5']:.1f}/{i['R@10']:.1f} score {result['score']:.1f}")

    def save_best(self, state: loop.TrainState, result: dict[str, Any]) -> None:
        """The parameters to ``model.safetensors``."""
        assert self.model.run_dir is not None
        runs.save_tensors(self.model.run_dir / runs.BEST, self.net.state_dict(),
                          {"uidx": state.uidx, "score": result["score"]})

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Parameters as ``model.<name>`` and Adam's moments as ``optim.<name>.<key>``."""
        return loop.optimizer_tensors(self.net, self.optimizer), {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
        """Parameters and optimizer moments from :meth:`state_tensors`'s form."""
        loop.load_optimizer_tensors(self.net, self.optimizer, tensors, source)
