"""The training loop every experiment uses: caption-image retrieval, hypernyms and entailment.

An experiment supplies a :class:`Trainee` (its batches, loss, update, dev metric and
the tensors that make up its training state); :func:`train_loop` owns the schedule
(epochs, ``validFreq``, ``dispFreq``), the ``metrics.jsonl`` records, the checkpoint
(``last.safetensors``: parameters, optimizer moments, random state and the
:class:`TrainState`), keeping the best dev score, the NaN stop and the distributed
handshakes. A checkpoint is written at the end of every epoch and at validations
(at most once every :attr:`Schedule.checkpoint_seconds`); resuming from it replays the
rest of the run update for update, so a run killed at any moment and resumed ends with
the parameters of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from . import distributed, runs


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN); the run folder is left intact."""


@dataclass
class TrainState:
    """Where training stands: saved in the checkpoint's metadata and restored on resume."""

    uidx: int = 0  #: updates done
    epoch: int = 0  #: epochs done
    batch: int = 0  #: batches done in the current epoch
    examples: int = 0  #: training examples seen
    best_score: float = -math.inf  #: best dev score so far
    rng: dict[str, Any] | None = None  #: the batch order's NumPy generator state at the start of this epoch
    best_uidx: int = 0  #: the update of the best dev score
    seconds: float = 0.0  #: training time so far, over every resumed session
    loss_sum: float = 0.0  #: summed loss (times examples) since the last train record
    loss_count: int = 0  #: examples in ``loss_sum``

    #: Fields that checkpoints written before the others existed hold.
    REQUIRED = ("uidx", "epoch", "batch", "examples", "best_score", "rng")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> TrainState:
        """Inverse of :meth:`to_dict`; anything else raises :class:`runs.RunError` naming ``source``."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or not set(cls.REQUIRED) <= set(d) <= names:
            raise runs.RunError(f"{source}: the training state in its metadata is not {sorted(names)}")
        counts = [d.get(k, 0) for k in ("uidx", "epoch", "batch", "examples", "best_uidx", "loss_count")]
        reals = [d.get(k, 0.0) for k in ("best_score", "seconds", "loss_sum")]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in counts) or not isinstance(d["rng"], dict) \
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in reals):
            raise runs.RunError(f"{source}: the training state in its metadata is malformed")
        return cls(**d)


@dataclass(frozen=True)
class Schedule:
    """When the loop validates and logs."""

    max_epochs: int  #: passes over the training data
    validFreq: int  #: validate (and checkpoint, see ``checkpoint_seconds``) every this many updates, and after the last
    dispFreq: int | None = None  #: a train record every this many updates (``None``: with each validation)
    valid_each_epoch: bool = False  #: also validate after each epoch's last update
    #: Train records carry the mean loss (per example) since the previous one; else the last update's,
    #: as the original driver printed it.
    mean_loss: bool = True
    #: A validation writes the checkpoint only when this many seconds of training have passed since the last
    #: one was written (0: at every validation); the end of every epoch and of the run always writes one.
    checkpoint_seconds: float = 0.0


class Trainee(Protocol):
    """What an experiment supplies to :func:`train_loop`."""

    optimizer: torch.optim.Optimizer

    def batches(self, epoch: int, rng: np.random.Generator) -> Sequence[Any]:
        """The batches of epoch ``epoch`` (from 0), drawn from ``rng`` (replayed on resume)."""
        ...

    def learning_rates(self, state: TrainState) -> list[float]:
        """The learning rate of each optimizer group for the next update."""
        ...

    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """The batch's loss (a scalar tensor, before any backward pass) and its number of examples."""
        ...

    def step(self, loss: torch.Tensor) -> None:
        """Backward pass and optimizer step for the loss :meth:`loss` returned."""
        ...

    def validate(self) -> dict[str, Any]:
        """Dev figures, with ``score`` (higher is better) among them; the network is left in training mode."""
        ...

    def describe(self, result: dict[str, Any]) -> str | None:
        """A line for the log of a validation's figures (``None``: none)."""
        ...

    def save_best(self, state: TrainState, result: dict[str, Any]) -> None:
        """Keep the current parameters as the best so far (``state.uidx`` and ``result`` describe them)."""
        ...

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything to resume from besides :class:`TrainState`: tensors and JSON-able metadata."""
        ...

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
        """Restore what :meth:`state_tensors` returned (:class:`runs.RunError` naming ``source`` if it does not fit)."""
        ...


@dataclass(frozen=True)
class RunFiles:
    """Where a loop writes: the run folder, its checkpoint's file name, the tag of its records and who writes."""

    run_dir: Path | None
    checkpoint: str = runs.LAST
    tags: dict[str, Any] | None = None  #: added to every metrics record (e.g. ``{"model": "order"}``)
    is_main: bool = True  #: this process writes the folder (rank 0)
    tensorboard: Any = None  #: a ``torch.utils.tensorboard.SummaryWriter`` that also receives the records' figures

    def log(self, state: TrainState, record: dict[str, Any]) -> None:
        """Append a metrics record stamped with where training stands (and write its figures to TensorBoard)."""
        if not self.is_main:
            return
        stamped = {**record, **(self.tags or {}), "uidx": state.uidx, "epoch": state.epoch,
                   "examples": state.examples, "time": time.time()}
        if self.run_dir is not None:
            runs.append_metrics(self.run_dir, stamped)
        if self.tensorboard is not None:
            prefix = f"{self.tags['model']}/" if self.tags and "model" in self.tags else ""
            for tag, value in scalars(record):
                self.tensorboard.add_scalar(f"{prefix}{record['event']}/{tag}", value, state.uidx, stamped["time"])


def scalars(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """The numbers of a metrics record as ``(tag, value)``, nested objects as ``outer/inner`` (booleans and
    the record's stamps left out)."""
    out: list[tuple[str, float]] = []
    for key, value in record.items():
        if key in ("event", "model", "uidx", "epoch", "examples", "time"):
            continue
        if isinstance(value, dict):
            out += scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", float(value)))
    return out


def tensorboard_writer(log_dir: str | Path | None) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``log_dir`` (``None``: none); without the ``tensorboard`` package,
    a one-line error naming it."""
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard, or the "
                         "order-embedding[tensorboard] extra)") from None
    return SummaryWriter(log_dir=str(log_dir))


def optimizer_tensors(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """A network's parameters as ``model.<name>`` and its optimizer's state as ``optim.<name>.<key>``."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    names = {id(p): n for n, p in net.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                tensors[f"optim.{names[id(p)]}.{key}"] = torch.as_tensor(value)
    return tensors


def load_optimizer_tensors(net: torch.nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           source: str) -> None:
    """Inverse of :func:`optimizer_tensors`; tensors that do not fit the network raise :class:`runs.RunError`."""
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = net.state_dict()
    wrong = sorted(set(expected) ^ set(weights)) + sorted(
        k for k in set(expected) & set(weights) if weights[k].shape != expected[k].shape)
    if wrong:
        raise runs.RunError(f"{source}: its parameters do not fit the run's model ({', '.join(wrong[:3])}"
                            f"{' ...' if len(wrong) > 3 else ''})")
    net.load_state_dict(weights)
    for name, p in net.named_parameters():
        saved = {k.rsplit(".", 1)[1]: v for k, v in tensors.items()
                 if k.startswith(f"optim.{name}.") and k.count(".") == name.count(".") + 2}
        if any(k != "step" and v.shape != p.shape for k, v in saved.items()):
            raise runs.RunError(f"{source}: optimizer state of {name} does not fit the parameter")
        if saved:
            optimizer.state[p] = {k: v.to(p.device) if k != "step" else v for k, v in saved.items()}


def save_checkpoint(path: Path, trainee: Trainee, state: TrainState) -> None:
    """Write the trainee's tensors, the torch random state and ``state`` to ``path``."""
    tensors, meta = trainee.state_tensors()
    tensors = {**tensors, "rng.torch": torch.get_rng_state()}
    runs.save_tensors(path, tensors, {"state": state.to_dict(), **({"task": meta} if meta else {})})


def load_checkpoint(path: Path, trainee: Trainee) -> TrainState:
    """Restore the trainee and the torch random state from ``path``; returns the saved training state."""
    tensors, meta = runs.load_tensors(path)
    if "state" not in meta or "rng.torch" not in tensors:
        raise runs.RunError(f"{path}: no training state in its metadata; it is not a checkpoint this trainer wrote")
    state = TrainState.from_dict(meta["state"], str(path))
    task = meta.get("task", {})
    if not isinstance(task, dict):
        raise runs.RunError(f"{path}: the task state in its metadata is not a JSON object")
    trainee.load_state({k: v for k, v in tensors.items() if k != "rng.torch"}, task, str(path))
    torch.set_rng_state(tensors["rng.torch"])
    return state


def start_state(files: RunFiles, trainee: Trainee, rng: np.random.Generator, verbose: bool = False,
                limits: tuple[int, int] | None = None) -> tuple[TrainState, bool]:
    """The state to start from, ``(state, resumed)``: the checkpoint's when the run folder holds one (the
    trainee and ``rng`` restored with it), else a fresh one. The records logged after the checkpoint are dropped.

    ``limits``: ``(max_epochs, batches per epoch)`` of the run's config; a checkpoint whose state lies beyond
    them is refused (:class:`runs.RunError`), since that config could not have produced it.
    """
    path = files.run_dir / files.checkpoint if files.run_dir is not None else None
    if path is None or not path.exists():
        state, resumed = TrainState(), False
    else:
        state, resumed = load_checkpoint(path, trainee), True
        if limits is not None:
            epochs, per_epoch = limits
            runs.check_progress(path, {"epoch": state.epoch, "batch": state.batch, "uidx": state.uidx},
                                {"epoch": epochs, "batch": per_epoch, "uidx": epochs * per_epoch})
        rng.bit_generator.state = state.rng or {}
        if verbose:
            tqdm.write(f"resuming {files.run_dir}{_tagged(files)} at epoch {state.epoch}, update {state.uidx}")
    if files.run_dir is not None and files.is_main:
        runs.remove_temporaries(files.run_dir)
        # records after the checkpoint are logged again
        runs.truncate_metrics(files.run_dir, state.uidx, (files.tags or {}).get("model"))
    return state, resumed


def _tagged(files: RunFiles) -> str:
    return f" ({files.tags['model']} model)" if files.tags and "model" in files.tags else ""


def train_loop(trainee: Trainee, schedule: Schedule, files: RunFiles, rng: np.random.Generator,
               state: TrainState, resumed: bool, verbose: bool = False) -> TrainState:
    """Train from ``state`` (see :func:`start_state`) to the end of the schedule; returns the final state.

    Rank 0 validates, logs and writes the run folder; every other rank waits for it at the barriers below.
    """
    started, seconds_before = time.time(), state.seconds
    checkpoint = files.run_dir / files.checkpoint if files.run_dir is not None else None
    prefix = f"{files.tags['model']} model: " if files.tags and "model" in files.tags else ""

    def elapsed() -> float:
        return seconds_before + time.time() - started

    last_validated = state.uidx if resumed else -1
    last_saved, saved_at = state.uidx if resumed else -1, state.seconds

    def save(force: bool) -> None:
        """Write the checkpoint (rank 0) when forced or when ``checkpoint_seconds`` have passed since the last."""
        nonlocal last_saved, saved_at
        state.seconds = elapsed()
        if checkpoint is not None and (force or state.seconds - saved_at >= schedule.checkpoint_seconds):
            save_checkpoint(checkpoint, trainee, state)
            last_saved, saved_at = state.uidx, state.seconds

    while state.epoch < schedule.max_epochs:
        state.rng = dict(rng.bit_generator.state)  # the epoch's draw is replayed on resume
        batches = trainee.batches(state.epoch, rng)
        bar = tqdm(batches[state.batch:], desc=f"{prefix}epoch {state.epoch}", unit="batch", disable=not verbose,
                   total=len(batches), initial=state.batch, leave=False)
        for batch in bar:
            for group, lr in zip(trainee.optimizer.param_groups, trainee.learning_rates(state)):
                group["lr"] = lr
            loss, examples = trainee.loss(batch)
            if not torch.isfinite(loss):
                where = f"; the last good checkpoint is in {files.run_dir}" if files.run_dir is not None else ""
                raise TrainingError(f"{prefix}loss became {loss.item()} at update {state.uidx + 1} "
                                    f"(epoch {state.epoch}){where}")
            trainee.step(loss)
            state.uidx += 1
            state.batch += 1
            state.examples += examples
            value = loss.item()
            state.loss_sum += value * examples
            state.loss_count += examples
            epoch_end = state.batch == len(batches)
            validating = state.uidx % schedule.validFreq == 0 or (schedule.valid_each_epoch and epoch_end)
            displaying = validating if schedule.dispFreq is None else state.uidx % schedule.dispFreq == 0
            if displaying:
                shown = state.loss_sum / state.loss_count if schedule.mean_loss else value
                files.log(state, {"event": "train", "loss": shown})
                bar.set_postfix(loss=f"{shown:.4g}")
                state.loss_sum, state.loss_count = 0.0, 0
            if validating:
                if files.is_main:  # rank 0 validates and writes; the others wait at the barrier
                    _validate(trainee, files, state, verbose)
                    save(force=epoch_end)
                distributed.barrier()
                last_validated = state.uidx
        bar.close()
        state.epoch += 1
        state.batch = 0
        state.rng = dict(rng.bit_generator.state)
        state.seconds = elapsed()
        # A checkpoint of the epoch's last update resumes to the same point (its draw is replayed, no batch left)
        if files.is_main and last_saved != state.uidx:
            save(force=True)
        distributed.barrier()  # every rank leaves the epoch once its checkpoint is written
    if last_validated != state.uidx:
        if files.is_main:
            _validate(trainee, files, state, verbose)
            save(force=True)
        distributed.barrier()
    state.seconds = elapsed()
    return state


def _validate(trainee: Trainee, files: RunFiles, state: TrainState, verbose: bool) -> None:
    """Validate; keep the parameters when the score is the best so far; log the figures."""
    result = trainee.validate()
    best = result["score"] > state.best_score
    if best:
        state.best_score = result["score"]
        state.best_uidx = state.uidx
        trainee.save_best(state, result)
    files.log(state, {"event": "valid", **result, "best": best})
    summary = trainee.describe(result)
    if verbose and summary:
        tqdm.write(f"Valid update {state.uidx}: {summary}" + (" (best, saved)" if best else ""))


def finish(run_dir: Path | None, record: dict[str, Any]) -> None:
    """Append the ``{"event": "finished"}`` record that marks a run as ended normally."""
    if run_dir is not None:
        runs.append_metrics(run_dir, {"event": "finished", **record, "time": time.time()})


def check_new_or_resumed(run_dir: Path, config: dict[str, Any], resume: bool) -> bool:
    """Whether ``run_dir`` holds a run to resume (``True``) or none yet (``False``).

    A folder that holds a run is refused unless ``resume``; a resumed run's ``config.json`` must record
    ``config`` (the same options, data and models), since the rest of the run replays the recorded one.
    """
    path = run_dir / runs.CONFIG
    if not path.exists():
        return False
    if not resume:
        raise ValueError(f"{run_dir} already holds a run; choose another --name or --save_dir, "
                         "or continue it with --resume")
    recorded = runs.load_config(path)
    if not isinstance(recorded, dict):
        raise runs.RunError(f"{path}: not a JSON object")
    for section, value in config.items():
        if json.loads(json.dumps(value)) != recorded.get(section):
            raise ValueError(f"{run_dir} was trained with other {section!r} settings than these "
                             f"({path} records them): resume it with the recorded options or start a new run")
    return True
