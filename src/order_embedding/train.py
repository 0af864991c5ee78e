"""Training: the original driver's ``trainer(**kwargs)``, read top to bottom.

Hyperparameters keep the original names (``dim``, ``dim_word``, ``margin``,
``lrate``, ``grad_clip``, ``validFreq`` ...), each declared once in
:mod:`order_embedding.options`. Every ``validFreq`` updates the dev
fold is evaluated and the parameters are kept when text-to-image R@1+R@5+R@10 is
the best so far; ``last.safetensors`` always holds enough to resume.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, runs
from .batching import batches_per_epoch, epoch_batches, pad_batch
from .data import FOLD_SIZE, Split, load_split, resolve_data_dir
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
from .optim import clip_gradients, flush_denormals, make_optimizer, scheduled_lr
from .options import NOT_RECORDED, changed_on_resume, make_options
from .vision.images import FeatureSource, image_paths, pixel_inputs
from .vocab import Vocabulary


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the run folder is left intact."""


@dataclass
class TrainState:
    """Where training stands: saved in ``last.safetensors``'s metadata and restored on resume."""

    uidx: int = 0  #: updates done
    epoch: int = 0  #: epochs done
    batch: int = 0  #: batches done in the current epoch
    examples: int = 0  #: image-caption pairs seen
    best_score: float = -math.inf  #: best dev t2i R@1+R@5+R@10 so far
    rng: Mapping[str, Any] | None = None  #: the batch order's NumPy generator state at the start of this epoch

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> TrainState:
        """Inverse of :meth:`to_dict`; anything else raises :class:`runs.RunError` naming ``source``."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
            raise runs.RunError(f"{source}: the training state in its metadata is not {sorted(names)}")
        counts = [d[k] for k in ("uidx", "epoch", "batch", "examples")]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in counts) or not isinstance(d["rng"], dict) \
                or isinstance(d["best_score"], bool) or not isinstance(d["best_score"], (int, float)):
            raise runs.RunError(f"{source}: the training state in its metadata is malformed")
        return cls(**d)


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


def _checkpoint(run_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """Save parameters, optimizer moments and the training state to ``last.safetensors``."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    names = {id(p): n for n, p in net.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"optim.{names[id(p)]}.{key}"] = torch.as_tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    runs.save_tensors(run_dir / runs.LAST, tensors, {"state": state.to_dict()})


def _restore(run_dir: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    """Load ``last.safetensors`` into the network and optimizer; returns the saved training state.

    A checkpoint that does not fit the network, or lacks its training state, raises :class:`runs.RunError`.
    """
    path = run_dir / runs.LAST
    tensors, meta = runs.load_tensors(path)
    if "state" not in meta or "rng.torch" not in tensors:
        raise runs.RunError(f"{path}: no training state in its metadata; it is not a checkpoint this trainer wrote")
    state = TrainState.from_dict(meta["state"], str(path))
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = net.state_dict()
    wrong = sorted(set(expected) ^ set(weights)) + sorted(
        k for k in set(expected) & set(weights) if weights[k].shape != expected[k].shape)
    if wrong:
        raise runs.RunError(f"{path}: its parameters do not fit the run's model ({', '.join(wrong[:3])}"
                            f"{' ...' if len(wrong) > 3 else ''})")
    net.load_state_dict(weights)
    params = dict(net.named_parameters())
    for name, p in params.items():
        saved = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.") and k.count(".") == name.count(".") + 2}
        if any(k != "step" and v.shape != p.shape for k, v in saved.items()):
            raise runs.RunError(f"{path}: optimizer state of {name} does not fit the parameter")
        if saved:
            optimizer.state[p] = {k: v.to(p.device) if k != "step" else v for k, v in saved.items()}
    torch.set_rng_state(tensors["rng.torch"])
    return state


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
def trainer(preset: str | None = None, **kwargs: Any) -> Path:
    """Train a caption-image model with the original's hyperparameter names; returns the run folder.

    The run folder is locked against a second writer while training; ``resume=True`` continues it from its
    last checkpoint (or from the start, when it was stopped before one was written). Subnormal floats are
    flushed to zero on the calling thread while it runs (:func:`flush_denormals`).
    """
    opt = make_options(preset, **kwargs)
    dist = distributed.setup(opt["device"])  # one process, or this rank of a torchrun group
    run_dir = Path(opt["save_dir"]) / opt["name"]
    new = not run_dir.exists()
    lock = runs.lock_run(run_dir) if dist.is_main else None
    try:
        return _train(opt, dist, run_dir)
    except BaseException:
        if new and lock is not None and [p.name for p in run_dir.iterdir()] == [runs.LOCK]:
            (run_dir / runs.LOCK).unlink()  # a run that failed before writing anything leaves no folder
            run_dir.rmdir()
        raise
    finally:
        if lock is not None:
            lock.close()


def _train(opt: dict[str, Any], dist: distributed.Context, run_dir: Path) -> Path:
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
    images = image_source(train, opt, verbose)
    if opt["backbone"] is None and train.features is not None and train.features.shape[1] != opt["dim_image"]:
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
    recorded = {k: v for k, v in opt.items() if k not in NOT_RECORDED}
    recorded.update(runs.data_record(opt["data"], data_dir, run_dir))
    model = LoadedModel(net, vocab, recorded, run_dir)
    dev_images = split_images(model, dev)

    state = TrainState()
    if resuming:
        state = _restore(run_dir, net, optimizer)
        # the state was reached under the recorded max_epochs (a resume may lower it to stop sooner)
        epochs = max(opt["max_epochs"], recorded_epochs if isinstance(recorded_epochs, int) else 0)
        per_epoch = batches_per_epoch(train.n_images, opt["batch_size"])
        runs.check_progress(run_dir / runs.LAST, {"epoch": state.epoch, "batch": state.batch, "uidx": state.uidx},
                            {"epoch": epochs, "batch": per_epoch, "uidx": epochs * per_epoch})
        if verbose:
            tqdm.write(f"resuming {run_dir} at epoch {state.epoch}, update {state.uidx}")
    elif started and verbose:
        tqdm.write(f"{run_dir} was stopped before its first checkpoint; starting it from the beginning")
    if dist.is_main:
        runs.remove_temporaries(run_dir)
        runs.truncate_metrics(run_dir, state.uidx)  # records after the checkpoint are logged again
        if not resuming:
            vocab.save(run_dir / runs.VOCAB)
        runs.save_json(run_dir / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": model.options})
    rng = np.random.default_rng(opt["seed"])
    if resuming:
        assert state.rng is not None  # from_dict requires the state's rng
        rng.bit_generator.state = state.rng

    def log(record: dict[str, Any]) -> None:
        if not dist.is_main:
            return
        runs.append_metrics(run_dir, {**record, "uidx": state.uidx, "epoch": state.epoch,
                                      "examples": state.examples, "time": time.time()})

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
        best = result["score"] > state.best_score
        if best:
            state.best_score = result["score"]
            runs.save_tensors(run_dir / runs.BEST, net.state_dict(), {"uidx": state.uidx, "score": result["score"]})
        log({"event": "valid", "split": dev.name, **result, "best": best})
        save_last()
        if verbose:
            t, i = result["t2i"], result["i2t"]
            tqdm.write(f"Valid update {state.uidx}: t2i R@1/5/10 {t['R@1']:.1f}/{t['R@5']:.1f}/{t['R@10']:.1f} "
                       f"i2t {i['R@1']:.1f}/{i['R@5']:.1f}/{i['R@10']:.1f} score {result['score']:.1f}"
                       + (" (best, saved)" if best else ""))

    # Training loop
    net.train()
    last_validated = state.uidx if resuming else -1
    while state.epoch < opt["max_epochs"]:
        state.rng = rng.bit_generator.state  # the epoch's draw is replayed on resume
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = scheduled_lr(lr, opt["lr_update"], state.epoch)
        batches = list(epoch_batches(train.cap2img, train.n_images, opt["batch_size"], rng))
        bar = tqdm(batches[state.batch:], desc=f"epoch {state.epoch}", unit="batch", disable=not verbose,
                   total=len(batches), initial=state.batch, leave=False)
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
                raise TrainingError(f"loss became {loss.item()} at update {state.uidx + 1} (epoch {state.epoch}); "
                                    f"the last good checkpoint is in {run_dir}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(net, opt["grad_clip"], opt["clip_mode"])
            optimizer.step()
            state.uidx += 1
            state.batch += 1
            state.examples += len(cap_idx)
            if state.uidx % opt["dispFreq"] == 0:
                log({"event": "train", "loss": loss.item()})
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if state.uidx % opt["validFreq"] == 0:
                run_validation()
                last_validated = state.uidx
        bar.close()
        state.epoch += 1
        state.batch = 0
        state.rng = rng.bit_generator.state
        save_last()
    if last_validated != state.uidx:
        run_validation()
    if verbose:
        tqdm.write(f"done: {state.uidx} updates, best dev score {state.best_score:.1f}; run folder {run_dir}")
    distributed.teardown(dist)
    return run_dir
