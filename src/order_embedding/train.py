"""Training: the original driver's ``trainer(**kwargs)``, read top to bottom.

Hyperparameters keep the original names (``dim``, ``dim_word``, ``margin``,
``lrate``, ``grad_clip``, ``validFreq`` ...). Every ``validFreq`` updates the dev
fold is evaluated and the parameters are kept when text-to-image R@1+R@5+R@10 is
the best so far; ``last.safetensors`` always holds enough to resume.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, runs
from .batching import epoch_batches, pad_batch
from .data import Split, load_split, resolve_data_dir
from .evaluation import evaluate_embeddings
from .inference import (
    LoadedModel,
    default_device,
    encode_images,
    encode_sentences,
    load_model,
    split_images,
)
from .loss import contrastive_loss
from .model import ModelConfig, OrderEmbeddingModel
from .optim import clip_gradients, make_optimizer, scheduled_lr
from .vision.images import FeatureSource, image_paths, pixel_inputs
from .vocab import Vocabulary

#: The original driver's shared defaults (section 3 of the reference), plus this project's options.
DEFAULTS: dict[str, Any] = {
    "name": "anon",
    "save_dir": "runs",
    "load_from": None,
    "data": "coco",
    "cnn": "10crop",
    "dim_image": 4096,
    "dim": 1024,
    "dim_word": 300,
    "encoder": "gru",
    "method": "order",
    "margin": 0.05,
    "abs": True,
    "max_epochs": 100,
    "dispFreq": 10,
    "validFreq": 300,
    "grad_clip": 2.0,
    "clip_mode": "tensor",
    "optimizer": "adam_original",
    "lr_update": None,
    "batch_size": 128,
    "lrate": 0.001,
    "max_violation": False,
    "n_words": None,
    "lowercase": False,
    "backbone": None,
    "backbone_options": {},
    "backbone_lrate": None,
    "image_root": None,
    "valid_split": "dev",
    "seed": 1234,
    "device": None,
    "resume": False,
    "verbose": True,
}

#: The paper's two models (reference section 3).
PRESETS: dict[str, dict[str, Any]] = {
    "order": {"method": "order", "margin": 0.05, "abs": True, "optimizer": "adam_original", "lr_update": None},
    "symmetric": {"method": "cosine", "margin": 0.2, "abs": False, "optimizer": "adam_original", "lr_update": None},
}


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the run folder is left intact."""


def make_options(preset: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Defaults, then a preset, then explicit options; unknown names raise ``ValueError``."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}")
    options = {**DEFAULTS, **(PRESETS[preset] if preset else {}), **kwargs}
    if options["optimizer"] not in ("adam", "adam_original"):
        raise ValueError(f"optimizer {options['optimizer']!r} is not supported (only 'adam' or 'adam_original')")
    if options["clip_mode"] not in ("tensor", "global"):
        raise ValueError(f"clip_mode must be 'tensor' or 'global', not {options['clip_mode']!r}")
    for key in ("batch_size", "max_epochs", "dispFreq", "validFreq"):
        if int(options[key]) < 1:
            raise ValueError(f"{key} must be at least 1, got {options[key]}")
    if options["batch_size"] < 2:
        raise ValueError("batch_size must be at least 2 (the loss needs negatives)")
    if options["lr_update"] is not None and (isinstance(options["lr_update"], bool)
                                             or not isinstance(options["lr_update"], int) or options["lr_update"] < 1):
        raise ValueError(f"lr_update must be a whole number of epochs (at least 1) or null, got {options['lr_update']!r}")
    if options["backbone_lrate"] is not None and not float(options["backbone_lrate"]) > 0:
        raise ValueError(f"backbone_lrate must be a positive number, got {options['backbone_lrate']!r}")
    return options


def parameter_groups(net: OrderEmbeddingModel, lrate: float, backbone_lrate: float | None) -> list[dict[str, Any]]:
    """The trainable parameters as optimizer groups: the pixel backbone's at ``backbone_lrate`` (when given
    and the backbone trains), everything else at ``lrate``."""
    backbone = net.image.backbone
    own = {id(p) for p in backbone.parameters()} if backbone is not None and backbone_lrate is not None else set()
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in own]
    tuned = [p for p in net.parameters() if p.requires_grad and id(p) in own]
    groups = [{"params": rest, "lr": lrate}]
    if tuned:
        groups.append({"params": tuned, "lr": float(backbone_lrate)})
    return groups


def image_source(split: Split, options: dict[str, Any], verbose: bool):
    """Feature rows, or decoded pixels when the model has a backbone."""
    if options["backbone"] is None:
        if split.features is None:
            raise ValueError(f"split {split.name!r} has no image features under images/{options['cnn']}/")
        return FeatureSource(split.features)
    paths = image_paths(split.image_files or [], split.image_root)
    return pixel_inputs(paths, options["backbone"], options["backbone_options"], train=True, verbose=verbose)


def validate(model: LoadedModel, dev: Split, dev_images: np.ndarray) -> dict[str, Any]:
    """Both directions' metrics on the dev fold, and the selection score (t2i R@1+R@5+R@10)."""
    s = encode_sentences(model, dev.captions)
    im = encode_images(model, dev_images)
    result = evaluate_embeddings(s, im, dev.cap2img, model.config.method)
    t = result["t2i"]
    return {**result, "score": t["R@1"] + t["R@5"] + t["R@10"]}


def _checkpoint(run_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Save parameters, optimizer moments and the training state to ``last.safetensors``."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    names = {id(p): n for n, p in net.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"optim.{names[id(p)]}.{key}"] = torch.as_tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    runs.save_tensors(run_dir / runs.LAST, tensors, {"state": state})


def _restore(run_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load ``last.safetensors`` into the network and optimizer; returns the saved training state."""
    tensors, meta = runs.load_tensors(run_dir / runs.LAST)
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(net.named_parameters())
    for name, p in params.items():
        saved = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.") and k.count(".") == name.count(".") + 2}
        if saved:
            optimizer.state[p] = {k: v.to(p.device) if k != "step" else v for k, v in saved.items()}
    torch.set_rng_state(tensors["rng.torch"])
    return meta["state"]


def trainer(preset: str | None = None, **kwargs: Any) -> Path:
    """Train a caption-image model with the original's hyperparameter names; returns the run folder."""
    opt = make_options(preset, **kwargs)
    dist = distributed.setup(opt["device"])  # one process, or this rank of a torchrun group
    verbose = opt["verbose"] and dist.is_main
    device = torch.device(opt["device"]) if opt["device"] else default_device()
    run_dir = Path(opt["save_dir"]) / opt["name"]
    resuming = bool(opt["resume"]) and (run_dir / runs.LAST).exists()
    if (run_dir / runs.CONFIG).exists() and not resuming:
        raise ValueError(f"{run_dir} already holds a run; choose another name or pass resume=True")
    distributed.barrier()  # every rank has decided before rank 0 writes the run folder

    # Data and vocabulary
    data_dir = resolve_data_dir(opt["data"])
    train = load_split(data_dir, "train", cnn=opt["cnn"], image_root=opt["image_root"])
    dev_full = load_split(data_dir, opt["valid_split"], cnn=opt["cnn"], image_root=opt["image_root"])
    dev = dev_full.fold(0) if dev_full.n_images > 1000 else dev_full
    if resuming:
        vocab = Vocabulary.load(run_dir / runs.VOCAB)
    else:
        vocab = Vocabulary.build(train.captions + dev_full.captions, n_words=opt["n_words"], lowercase=opt["lowercase"])
    train_ids = [vocab.encode(c) for c in train.captions]
    images = image_source(train, opt, verbose)
    if opt["backbone"] is None and train.features.shape[1] != opt["dim_image"]:
        raise ValueError(f"training features are {train.features.shape[1]}-dimensional but dim_image is {opt['dim_image']}")

    # Model and optimizer
    torch.manual_seed(opt["seed"])
    config = ModelConfig(n_words=vocab.size, dim_word=opt["dim_word"], dim=opt["dim"], dim_image=opt["dim_image"],
                         method=opt["method"], abs=opt["abs"], encoder=opt["encoder"],
                         backbone=opt["backbone"], backbone_options=dict(opt["backbone_options"]))
    net = OrderEmbeddingModel(config).to(device)
    if opt["load_from"] and not resuming:
        net.load_state_dict(load_model(opt["load_from"], device="cpu").net.state_dict())
    groups = parameter_groups(net, opt["lrate"], opt["backbone_lrate"])
    base_lrs = [g["lr"] for g in groups]
    forward = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    optimizer = make_optimizer(opt["optimizer"], groups, opt["lrate"])
    model = LoadedModel(net, vocab, {k: v for k, v in opt.items() if k not in ("verbose", "device", "resume")}, run_dir)
    dev_images = split_images(model, dev)

    state = {"uidx": 0, "epoch": 0, "batch": 0, "examples": 0, "best_score": -math.inf, "rng": None}
    if resuming:
        trained_with = runs.load_json(run_dir / runs.CONFIG)["train"].get("optimizer", "adam")
        if trained_with != opt["optimizer"]:
            raise ValueError(f"{run_dir} was trained with optimizer {trained_with!r}; resume it with the same "
                             f"optimizer, not {opt['optimizer']!r}")
        state = _restore(run_dir, net, optimizer)
        if verbose:
            tqdm.write(f"resuming {run_dir} at epoch {state['epoch']}, update {state['uidx']}")
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        vocab.save(run_dir / runs.VOCAB)
        runs.save_json(run_dir / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": model.options})
    rng = np.random.default_rng(opt["seed"])
    if resuming:
        rng.bit_generator.state = state["rng"]

    def log(record: dict[str, Any]) -> None:
        if not dist.is_main:
            return
        runs.append_metrics(run_dir, {**record, "uidx": state["uidx"], "epoch": state["epoch"],
                                      "examples": state["examples"], "time": time.time()})

    def save_last() -> None:
        if dist.is_main:
            _checkpoint(run_dir, net, optimizer, state)
        distributed.barrier()

    def run_validation() -> None:
        if not dist.is_main:  # rank 0 validates and saves; the others wait for its checkpoint
            distributed.barrier()
            return
        net.eval()
        result = validate(model, dev, dev_images)
        net.train()
        best = result["score"] > state["best_score"]
        if best:
            state["best_score"] = result["score"]
            runs.save_tensors(run_dir / runs.BEST, net.state_dict(), {"uidx": state["uidx"], "score": result["score"]})
        log({"event": "valid", "split": dev.name, **result, "best": best})
        save_last()
        if verbose:
            t, i = result["t2i"], result["i2t"]
            tqdm.write(f"Valid update {state['uidx']}: t2i R@1/5/10 {t['R@1']:.1f}/{t['R@5']:.1f}/{t['R@10']:.1f} "
                       f"i2t {i['R@1']:.1f}/{i['R@5']:.1f}/{i['R@10']:.1f} score {result['score']:.1f}"
                       + (" (best, saved)" if best else ""))

    # Training loop
    net.train()
    last_validated = state["uidx"] if resuming else -1
    while state["epoch"] < opt["max_epochs"]:
        state["rng"] = rng.bit_generator.state  # the epoch's draw is replayed on resume
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = scheduled_lr(lr, opt["lr_update"], state["epoch"])
        batches = list(epoch_batches(train.cap2img, train.n_images, opt["batch_size"], rng))
        bar = tqdm(batches[state["batch"]:], desc=f"epoch {state['epoch']}", unit="batch", disable=not verbose,
                   total=len(batches), initial=state["batch"], leave=False)
        for cap_idx, img_idx in bar:
            if len(cap_idx) < dist.world_size:  # a final batch too small to give every rank a pair
                continue
            mine = distributed.shard(len(cap_idx))  # this rank's rows of the global batch
            tokens, lengths = pad_batch([train_ids[i] for i in cap_idx[mine]])
            x = images.batch(img_idx[mine], train=True).to(device)
            s, im = forward(tokens.to(device), lengths, x)
            s, im = distributed.all_gather_with_grad(s, len(cap_idx)), distributed.all_gather_with_grad(im, len(cap_idx))
            loss = contrastive_loss(s, im, opt["method"], opt["margin"], opt["max_violation"])
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at update {state['uidx'] + 1} (epoch {state['epoch']}); "
                                    f"the last good checkpoint is in {run_dir}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(net, opt["grad_clip"], opt["clip_mode"])
            optimizer.step()
            state["uidx"] += 1
            state["batch"] += 1
            state["examples"] += len(cap_idx)
            if state["uidx"] % opt["dispFreq"] == 0:
                log({"event": "train", "loss": loss.item()})
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if state["uidx"] % opt["validFreq"] == 0:
                run_validation()
                last_validated = state["uidx"]
        bar.close()
        state["epoch"] += 1
        state["batch"] = 0
        state["rng"] = rng.bit_generator.state
        save_last()
    if last_validated != state["uidx"]:
        run_validation()
    if verbose:
        tqdm.write(f"done: {state['uidx']} updates, best dev score {state['best_score']:.1f}; run folder {run_dir}")
    distributed.teardown(dist)
    return run_dir
