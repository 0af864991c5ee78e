"""Hypernym completion on WordNet: order-embeddings of synsets, a symmetric variant and the
transitive-closure baseline (section 7 of the reference; table 1 of the paper).

One embedding per synset. The order model keeps the entries non-negative and scores a
pair (hyponym ``x``, hypernym ``y``) by the order violation ``E = sum_i max(0, y_i - x_i)^2``
(:func:`order_embedding.measures.order_violation` with the hypernym in the caption
role). The symmetric variant uses ``E = 1 - cos(x, y)``, which cannot tell the
direction of an edge. Both train with the hinge ``E`` for positives and
``max(0, margin - E)`` for negatives, averaged over each batch of mixed positives and
negatives, with Adam. A pair is predicted to be an edge when ``E <= threshold``, the
threshold chosen on dev; the parameters kept are those of the best dev accuracy.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import loop, options, runs
from ..evaluation import accuracy_at, best_threshold
from ..loss import pair_hinge_loss
from ..measures import MEASURES, MODELS, measure_keyword, measure_name, model_name
from ..optim import flush_denormals
from . import sgd
from .wordnet import DEFAULT_WORDNET_DIR, HypernymDataset, contains_edges, corrupt_edges, transitive_closure

#: Run-folder file listing the synset of each embedding row.
SYNSETS = "synsets.json"
#: Run-folder file with the final results (the same object ``--json`` writes).
RESULTS = "results.json"
#: Seconds of training between resume checkpoints written at validations (each epoch's end writes one too):
#: a checkpoint holds the table, Adam's moments and the best table (about 66 MB for WordNet at dim 50), and
#: validations come every few hundred milliseconds.
CHECKPOINT_SECONDS = 60.0

#: How a model trains (``--training``): the paper's Adam, or Ganea et al.'s SGD (:mod:`.sgd`).
TRAININGS = ("paper", "ganea")

#: The options of ``order-embedding hypernym``: the training options shared with ``train`` (same flags and
#: rules, this experiment's defaults), then its own.
OPTIONS: tuple[options.Option, ...] = (
    options.Option("wordnet", DEFAULT_WORDNET_DIR, options.text, "folder with data.noun and index.noun (NLTK's "
                   "wordnet folder works)", metavar="DIR"),
    options.Option("root", None, options.optional(options.text), "use only this synset and its hyponyms, direct or not "
                   "(e.g. mammal.n.01)", metavar="SYNSET"),
    options.shared("seed", 0, "seed of the split, negatives and initialisation"),
    options.Option("dev_size", 4000, options.at_least(0), "dev edges"),
    options.Option("test_size", 4000, options.at_least(0), "test edges"),
    options.shared("max_epochs", 15, "training epochs of each model", aliases=("epochs",)),
    options.shared("dim", 50, "embedding dimension"),
    options.shared("batch_size", 1000, "pairs per update", rule=options.positive_int),
    options.shared("lrate", 0.01, "Adam learning rate", aliases=("lr",)),
    options.shared("margin", 1.0, "hinge margin for negatives", rule=options.positive_number),
    options.Option("negatives", 1, options.positive_int, "negatives drawn per training edge each epoch"),
    options.Option("filter_negatives", False, options.boolean, "draw a training negative again when it is a "
                   "training edge (known to be true)"),
    options.Option("reversed_negatives", False, options.boolean, "also use each training edge reversed "
                   "(hypernym, hyponym) as a negative every epoch"),
    options.Option("lr_decay", False, options.boolean, "decay the learning rate linearly to 0 over the run"),
    options.Option("training", "paper", options.choice(*TRAININGS), "paper: Adam on the mean loss of shuffled "
                   "batches of edges and negatives, vectors from N(0, 1) clamped at 0; ganea: Ganea et al.'s "
                   "SGD training, on the summed loss of batches of edges, each with --negatives pairs that "
                   "replace its hyponym, vectors uniform within 0.1 of 0 and not clamped (order model only; "
                   "dev measured at each epoch's end)"),
    options.shared("validFreq", 100, "evaluate on dev every this many updates and at each epoch's end",
                   aliases=("valid-every",)),
    options.NO_SYMMETRIC,
    options.shared("save_dir"),
    options.shared("name", "hypernym"),
    options.RESUME_RUN,
    options.JSON,
    options.TENSORBOARD,
    options.THREADS,
    options.QUIET,
)
#: Each option by name.
BY_NAME = {o.name: o for o in OPTIONS}


@measure_keyword
@dataclass
class HypernymConfig:
    """Hyperparameters of one embedding model (defaults: the paper's order model), named as :data:`OPTIONS`.

    ``method`` is the measure, ``order`` or ``cosine`` (the symmetric model); every value is checked by its
    option's rule.
    """

    method: str = "order"
    dim: int = BY_NAME["dim"].default
    max_epochs: int = BY_NAME["max_epochs"].default
    batch_size: int = BY_NAME["batch_size"].default
    lrate: float = BY_NAME["lrate"].default
    margin: float = BY_NAME["margin"].default
    negatives: int = BY_NAME["negatives"].default
    filter_negatives: bool = False
    reversed_negatives: bool = False
    lr_decay: bool = False
    training: str = "paper"
    validFreq: int = BY_NAME["validFreq"].default
    seed: int = BY_NAME["seed"].default

    def __post_init__(self) -> None:
        self.method = measure_name(self.method)
        for f in fields(self):
            if f.name in BY_NAME:
                setattr(self, f.name, BY_NAME[f.name].parse(getattr(self, f.name)))
        if self.training == "ganea" and self.method != "order":
            raise options.OptionError("--training ganea trains the order model only (add --no-symmetric)")
        if self.training == "ganea" and self.reversed_negatives:
            raise options.OptionError("--reversed-negatives applies only to --training paper")

    @property
    def model(self) -> str:
        """The model's name: ``order`` or ``symmetric`` (keys of the results and the saved embeddings)."""
        return model_name(self.method)


@dataclass
class TrainedEmbeddings:
    """The best embeddings of one model on dev, their threshold and accuracies (fractions)."""

    model: str  #: ``order`` or ``symmetric``
    embeddings: np.ndarray
    threshold: float
    dev_accuracy: float
    test_accuracy: float
    best_epoch: int
    best_uidx: int
    updates: int
    seconds: float
    config: HypernymConfig = field(repr=False)


@measure_keyword
def pair_errors(hyponyms: torch.Tensor, hypernyms: torch.Tensor, method: str) -> torch.Tensor:
    """Error of each aligned row pair (hyponym, hypernym) under the measure ``method`` (``order`` or ``cosine``);
    low means "is a"."""
    return MEASURES[measure_name(method)].distance(hypernyms, hyponyms)


@measure_keyword
def embedding_errors(embeddings: np.ndarray | torch.Tensor, pairs: np.ndarray, method: str) -> np.ndarray:
    """Errors (float64) of edge rows ``(hyponym, hypernym)`` under fixed embeddings."""
    emb = torch.as_tensor(embeddings)
    p = torch.as_tensor(np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2))
    with torch.no_grad():
        return pair_errors(emb[p[:, 0]], emb[p[:, 1]], method).double().numpy()


def labelled(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative edge rows stacked, with their boolean labels."""
    return np.concatenate([positives, negatives]), np.r_[np.ones(len(positives), bool), np.zeros(len(negatives), bool)]


def closure_baseline(data: HypernymDataset) -> dict[str, float]:
    """Accuracy (fractions) of predicting an edge iff it is in the transitive closure of the training edges."""
    known = transitive_closure(data.train, data.graph.n_nodes)
    out = {}
    for split, pos, neg in (("dev", data.dev, data.dev_negatives), ("test", data.test, data.test_negatives)):
        pairs, labels = labelled(pos, neg)
        out[f"{split}_accuracy"] = float(np.mean(contains_edges(known, pairs, data.graph.n_nodes) == labels))
    return out


def learning_rate(config: HypernymConfig, uidx: int, updates: int) -> float:
    """The learning rate of update ``uidx`` (from 0) of ``updates``: constant, or with ``lr_decay``
    falling linearly from ``lr`` towards 0."""
    return config.lrate * (1 - uidx / updates) if config.lr_decay else config.lrate


def adam_optimizer(weight: torch.nn.Parameter, lr: float) -> torch.optim.Adam:
    """Adam (beta1 0.9, beta2 0.999, eps 1e-8); the fused single-pass kernel where torch has one for CPU."""
    try:
        return torch.optim.Adam([weight], lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except RuntimeError:
        return torch.optim.Adam([weight], lr=lr, betas=(0.9, 0.999), eps=1e-8)


@measure_keyword
def forward_rows(weight: torch.nn.Parameter, pairs: torch.Tensor, labels: torch.Tensor, method: str,
                 margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss of a batch of (hyponym, hypernym) rows, with the rows read and their gathered copy
    (which receives the gradient); the first half of :func:`train_step`."""
    rows = pairs.reshape(-1)  # hyponym, hypernym, hyponym, hypernym, ...
    with torch.no_grad():
        gathered = weight.detach()[rows]
        if method == "order":
            weight.detach().index_copy_(0, rows, gathered.clamp_(min=0))
    gathered.requires_grad_()
    x, z = gathered.view(len(pairs), 2, -1).unbind(1)
    return pair_hinge_loss(pair_errors(x, z, method), labels, margin, "mean"), rows, gathered


def apply_rows(weight: torch.nn.Parameter, grad: torch.Tensor, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
               rows: torch.Tensor, gathered: torch.Tensor) -> None:
    """Backward pass of :func:`forward_rows`'s loss and the optimizer step; the second half of :func:`train_step`."""
    loss.backward()
    assert gathered.grad is not None
    grad.index_add_(0, rows, gathered.grad)
    weight.grad = grad
    optimizer.step()
    grad.index_fill_(0, rows, 0)


@measure_keyword
def train_step(weight: torch.nn.Parameter, grad: torch.Tensor, optimizer: torch.optim.Optimizer, pairs: torch.Tensor,
               labels: torch.Tensor, method: str, margin: float) -> float:
    """One update on a batch of (hyponym, hypernym) rows; returns the batch loss.

    The same update as clamping the order model's whole table to >= 0 and then running dense
    Adam with autograd through the lookup, with only the batch's rows touched outside Adam:

    - Only the rows read are clamped. A row the batch does not read moves by Adam steps of
      one sign (its first moment only decays; at the start it is zero), so an entry below 0
      keeps falling, and clamping it every step or when it is next read gives the same
      values. Tables are read through ``clamp(min=0)``.
    - ``grad`` (shaped like ``weight``, all zeros on entry and on return) is the gradient
      buffer: the gathered rows' gradients are added into it for the optimizer, and those
      rows are zeroed again after the step.
    - ``optimizer`` updates the whole table, so untouched rows keep moving with their
      decaying moments.
    """
    loss, rows, gathered = forward_rows(weight, pairs, labels, method, margin)
    apply_rows(weight, grad, optimizer, loss, rows, gathered)
    return float(loss.detach())


def training_negatives(data: HypernymDataset, config: HypernymConfig, rng: np.random.Generator) -> np.ndarray:
    """One epoch's negative rows: ``negatives`` corruptions of each training edge (drawn again when one is a
    training edge, with ``filter_negatives``), then, with ``reversed_negatives``, each training edge reversed
    (false in a hierarchy without cycles)."""
    exclude = data.train if config.filter_negatives else None
    drawn = [corrupt_edges(data.train, data.graph.n_nodes, rng, exclude) for _ in range(config.negatives)]
    return np.concatenate(drawn + ([data.train[:, ::-1]] if config.reversed_negatives else []))


class HypernymTrainee:
    """One embedding table as :func:`order_embedding.loop.train_loop` trains it (see :func:`train_step`)."""

    def __init__(self, data: HypernymDataset, config: HypernymConfig) -> None:
        self.data, self.cfg = data, config
        n = data.graph.n_nodes
        init_seed, sample_seed = np.random.SeedSequence([config.seed, list(MEASURES).index(config.method)]).generate_state(2)
        self.rng = np.random.default_rng(sample_seed)
        self.ganea = config.training == "ganea"
        start = (sgd.initial_table(n, config.dim, int(init_seed)) if self.ganea else
                 torch.randn(n, config.dim, generator=torch.Generator().manual_seed(int(init_seed))))
        self.table = torch.nn.ParameterDict({"weight": torch.nn.Parameter(start)})
        self.weight = self.table["weight"]
        self.dev_pairs, self.dev_labels = labelled(data.dev, data.dev_negatives)
        if self.ganea:  # one step of the loop is a compiled epoch of SGD updates; the optimizer holds its rate
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD([self.weight], lr=config.lrate)
            self.per_epoch, self.updates_per_step = 1, math.ceil(len(data.train) / config.batch_size)
            self.known = sgd.excluded_index(data.train if config.filter_negatives else np.empty((0, 2), np.int64), n)
        else:
            self.optimizer = adam_optimizer(self.weight, config.lrate)
            self.grad = torch.zeros_like(self.weight)  # see train_step
            self.per_epoch = math.ceil(len(data.train) * (1 + config.negatives + config.reversed_negatives)
                                       / config.batch_size)
            self.updates_per_step = 1
        self.best = self.current().clone()
        self.threshold, self.dev_accuracy, self.best_epoch = 0.0, -1.0, 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def current(self) -> torch.Tensor:
        """The embeddings as they are read: the order model's clamped at 0 (shifted into the orthant with
        Ganea et al.'s training, which does not clamp)."""
        w = self.weight.detach()
        if self.ganea:
            return sgd.shifted(w)
        return w.clamp(min=0) if self.cfg.method == "order" else w

    def batches(self, epoch: int, rng: np.random.Generator) -> list[Any]:
        """The training edges and their negatives (fresh random ones, and the reversed edges with
        ``reversed_negatives``), shuffled, in batches of ``batch_size``; with Ganea et al.'s training, one
        seed for the whole epoch's shuffle and negatives."""
        if self.ganea:
            return [int(rng.integers(2**63))]
        pairs, labels = labelled(self.data.train, training_negatives(self.data, self.cfg, rng))
        shuffle = rng.permutation(len(pairs))
        pairs_t, labels_t = torch.from_numpy(pairs[shuffle]), torch.from_numpy(labels[shuffle])
        size = self.cfg.batch_size
        return [(pairs_t[b * size:(b + 1) * size], labels_t[b * size:(b + 1) * size])
                for b in range(self.per_epoch)]

    def learning_rates(self, state: loop.TrainState) -> list[float]:
        """See :func:`learning_rate`."""
        return [learning_rate(self.cfg, state.uidx, self.cfg.max_epochs * self.per_epoch)]

    def loss(self, batch: Any) -> tuple[torch.Tensor, int]:
        """The mean hinge loss of the batch (the rows it reads are clamped first); with Ganea et al.'s
        training, the epoch's updates are made here and the loss is their mean per edge."""
        if self.ganea:
            lr = self.optimizer.param_groups[0]["lr"]
            mean = sgd.train_epoch(self.weight.detach(), self.data.train, self.known, self.cfg.negatives, lr,
                                   self.cfg.margin, self.cfg.batch_size, np.random.default_rng(batch))
            return torch.tensor(mean), len(self.data.train)
        pairs, labels = batch
        loss, rows, gathered = forward_rows(self.weight, pairs, labels, self.cfg.method, self.cfg.margin)
        self._pending = rows, gathered
        return loss, len(labels)

    def step(self, loss: torch.Tensor) -> None:
        """Adam on the whole table with the batch rows' gradients (nothing with Ganea et al.'s training, whose
        epoch :meth:`loss` ran)."""
        if self.ganea:
            return
        assert self._pending is not None
        apply_rows(self.weight, self.grad, self.optimizer, loss, *self._pending)
        self._pending = None

    def validate(self) -> dict[str, Any]:
        """Dev accuracy (percent) at the best threshold; the score is the accuracy as a fraction."""
        threshold, acc = best_threshold(embedding_errors(self.current(), self.dev_pairs, self.cfg.method), self.dev_labels)
        return {"dev_accuracy": 100 * acc, "threshold": threshold, "score": acc}

    def describe(self, result: dict[str, Any]) -> None:
        """No line: the progress bar shows the loss."""
        return None

    def save_best(self, state: loop.TrainState, result: dict[str, Any]) -> None:
        """Keep the embeddings, their threshold and epoch (in the checkpoint; the run folder's
        ``model.safetensors`` receives them when the model is trained)."""
        self.best = self.current().clone()
        self.threshold, self.dev_accuracy, self.best_epoch = result["threshold"], result["score"], state.epoch + 1

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The table, Adam's moments and the best table with its threshold."""
        return ({**loop.optimizer_tensors(self.table, self.optimizer), "best.weight": self.best},
                {"threshold": self.threshold, "dev_accuracy": self.dev_accuracy, "best_epoch": self.best_epoch})

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
        """Inverse of :meth:`state_tensors`."""
        best = tensors.pop("best.weight", None)
        if best is None or best.shape != self.weight.shape or set(meta) != {"threshold", "dev_accuracy", "best_epoch"}:
            raise runs.RunError(f"{source}: not a checkpoint of this hypernym model")
        loop.load_optimizer_tensors(self.table, self.optimizer, tensors, source)
        self.best = best
        self.threshold, self.dev_accuracy, self.best_epoch = meta["threshold"], meta["dev_accuracy"], meta["best_epoch"]


def train_trainee(trainee: HypernymTrainee, run_dir: Path | None, progress: bool, tensorboard: Any) -> loop.TrainState:
    """Run :func:`loop.train_loop` on a hypernym trainee of any protocol (checkpoints and metrics tagged with its
    model; a checkpoint at most every :data:`CHECKPOINT_SECONDS` between epoch ends)."""
    cfg = trainee.cfg
    files = loop.RunFiles(run_dir, runs.checkpoint_name(cfg.model), {"model": cfg.model}, tensorboard=tensorboard)
    schedule = loop.Schedule(cfg.max_epochs, cfg.validFreq, None, valid_each_epoch=True,
                             checkpoint_seconds=CHECKPOINT_SECONDS)
    with flush_denormals():  # Adam's moments of rows left untouched decay towards the subnormal range
        state, resumed = loop.start_state(files, trainee, trainee.rng, progress, limits=(cfg.max_epochs, trainee.per_epoch))
        return loop.train_loop(trainee, schedule, files, trainee.rng, state, resumed, progress)


def train_embeddings(
    data: HypernymDataset,
    config: HypernymConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    tensorboard: Any = None,
) -> TrainedEmbeddings:
    """Train one model on ``data.train``; keep the parameters of best dev accuracy and report test there.

    With ``run_dir``, train and valid records (tagged with ``"model"``: the model's name) are appended
    to its ``metrics.jsonl`` (and as scalars to a ``tensorboard`` writer), and training resumes from the
    model's checkpoint there.
    """
    cfg = config
    trainee = HypernymTrainee(data, cfg)
    state = train_trainee(trainee, Path(run_dir) if run_dir is not None else None, progress, tensorboard)
    test_pairs, test_labels = labelled(data.test, data.test_negatives)
    test_acc = accuracy_at(embedding_errors(trainee.best, test_pairs, cfg.method), test_labels, trainee.threshold)
    return TrainedEmbeddings(
        model=cfg.model, embeddings=trainee.best.numpy(), threshold=trainee.threshold,
        dev_accuracy=trainee.dev_accuracy, test_accuracy=test_acc, best_epoch=trainee.best_epoch,
        best_uidx=state.best_uidx * trainee.updates_per_step, updates=state.uidx * trainee.updates_per_step,
        seconds=state.seconds, config=cfg,
    )


def run_config(data: HypernymDataset, configs: list[HypernymConfig], source: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` of a hypernym run (``kind: hypernym``)."""
    g = data.graph
    return {
        "kind": "hypernym",
        "model": {"n_nodes": g.n_nodes, "dim": {c.model: c.dim for c in configs}, "methods": {c.model: c.method for c in configs}},
        "train": {c.model: asdict(c) for c in configs},
        "data": {**source, "seed": data.seed, "nodes": g.n_nodes, "direct_edges": len(g.edges), "edges": len(data.closure),
                 "train": len(data.train), "dev": len(data.dev), "test": len(data.test)},
    }


def prepare_run_dir(run_dir: str | Path, data: HypernymDataset, configs: list[HypernymConfig], source: dict[str, Any],
                    resume: bool = False, protocol: dict[str, Any] | None = None) -> Path:
    """Create a run folder with its config and synset list; an existing run is refused unless ``resume``
    (and then must record the same config). ``protocol``: the evaluation protocol and its settings, recorded
    in ``config.json`` (:mod:`.protocol`; absent for the paper's)."""
    run_dir = Path(run_dir)
    config = run_config(data, configs, source)
    if protocol is not None:
        config["protocol"] = protocol
    if loop.check_new_or_resumed(run_dir, config, resume):
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / runs.METRICS).unlink(missing_ok=True)
    g = data.graph
    runs.save_json(run_dir / SYNSETS, {"names": g.names, "offsets": g.offsets.tolist()})
    runs.save_json(run_dir / runs.CONFIG, config)
    return run_dir


@contextmanager
def hypernym_run(run_dir: str | Path | None, data: HypernymDataset, configs: list[HypernymConfig],
                 source: dict[str, Any] | None, resume: bool, tensorboard: str | Path | None,
                 protocol: dict[str, Any] | None = None) -> Iterator[tuple[Path | None, Any]]:
    """The run folder (:func:`prepare_run_dir`, locked while the block runs; None without ``run_dir``) and the
    TensorBoard writer (or None) of one hypernym run, closed afterwards."""
    writer = loop.tensorboard_writer(tensorboard)
    lock = None
    try:
        folder = None
        if run_dir is not None:
            folder = prepare_run_dir(run_dir, data, configs, source or {}, resume, protocol)
            lock = runs.lock_run(folder)
        yield folder, writer
    finally:
        if lock is not None:
            lock.close()
        if writer is not None:
            writer.close()


def finish_run(run_dir: Path | None, results: dict[str, Any], updates: dict[str, int]) -> None:
    """Write a run's ``results.json`` and its ``finished`` record (nothing without a run folder)."""
    if run_dir is not None:
        runs.save_json(run_dir / RESULTS, results)
        loop.finish(run_dir, {"updates": updates, "seconds": results["seconds"]})


def save_embeddings(run_dir: str | Path, models: list[TrainedEmbeddings]) -> None:
    """Write the best embeddings of each model to the run folder's ``model.safetensors``."""
    runs.save_tensors(
        Path(run_dir) / runs.BEST,
        {m.model: torch.from_numpy(np.ascontiguousarray(m.embeddings)) for m in models},
        {"thresholds": {m.model: m.threshold for m in models},
         "dev_accuracy": {m.model: 100 * m.dev_accuracy for m in models}},
    )


@dataclass
class HypernymEmbeddings:
    """A saved hypernym run: synset names, one embedding table per measure, and the chosen thresholds."""

    names: list[str]
    embeddings: dict[str, np.ndarray]
    thresholds: dict[str, float]

    def errors(self, pairs: list[tuple[str, str]], model: str = "order") -> np.ndarray:
        """Errors of (hyponym name, hypernym name) pairs under ``model`` (``order`` or ``symmetric``);
        ``<= thresholds[model]`` means "is a"."""
        index = {n: k for k, n in enumerate(self.names)}
        try:
            rows = np.array([[index[a], index[b]] for a, b in pairs], dtype=np.int64).reshape(-1, 2)
        except KeyError as e:
            raise ValueError(f"unknown synset {e.args[0]!r}") from None
        if model not in self.embeddings:
            raise ValueError(f"this run has no {model!r} embeddings (it has {sorted(self.embeddings)})")
        return embedding_errors(self.embeddings[model], rows, MODELS[model])


def load_embeddings(run_dir: str | Path) -> HypernymEmbeddings:
    """Read a hypernym run folder written by :func:`run_experiment`."""
    run_dir = Path(run_dir)
    config = runs.load_json(run_dir / runs.CONFIG)
    if config.get("kind") != "hypernym":
        raise runs.RunError(f"{run_dir} is a {config.get('kind')!r} run, not a hypernym run")
    tensors, meta = runs.load_tensors(run_dir / runs.BEST)
    names = runs.load_json(run_dir / SYNSETS)["names"]
    embeddings = {k: v.numpy() for k, v in tensors.items()}
    for k, v in embeddings.items():
        if v.shape[0] != len(names):
            raise runs.RunError(f"{run_dir / runs.BEST}: {k!r} has {v.shape[0]} rows for {len(names)} synsets")
    return HypernymEmbeddings(names=names, embeddings=embeddings, thresholds=meta["thresholds"])


def run_experiment(
    data: HypernymDataset,
    configs: list[HypernymConfig],
    run_dir: str | Path | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    started: float | None = None,
    resume: bool = False,
    tensorboard: str | Path | None = None,
) -> dict[str, Any]:
    """Train each configured model and run the closure baseline; the results object (accuracies in percent).

    With ``run_dir``, a run folder gets the config, synset list, metrics, embeddings and results; with
    ``resume``, a run folder holding this run continues from its checkpoints; with ``tensorboard``, the
    metrics also go to that folder as TensorBoard scalars.
    ``seconds`` counts from ``started`` (a ``time.time()``, default: this call).
    """
    start = time.time() if started is None else started
    with hypernym_run(run_dir, data, configs, source, resume, tensorboard) as (folder, writer):
        return _run(data, configs, folder, progress, start, writer)


def _run(data: HypernymDataset, configs: list[HypernymConfig], run_dir: Path | None, progress: bool,
         start: float, writer: Any) -> dict[str, Any]:
    trained: list[TrainedEmbeddings] = []
    models: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        m = train_embeddings(data, cfg, run_dir=run_dir, progress=progress, tensorboard=writer)
        trained.append(m)
        models[m.model] = {"dev_accuracy": 100 * m.dev_accuracy, "test_accuracy": 100 * m.test_accuracy,
                             "threshold": m.threshold, "best_epoch": m.best_epoch, "best_uidx": m.best_uidx,
                             "updates": m.updates, "seconds": m.seconds}
        if run_dir is not None:
            save_embeddings(run_dir, trained)
    base = closure_baseline(data)
    models["transitive_closure"] = {"dev_accuracy": 100 * base["dev_accuracy"], "test_accuracy": 100 * base["test_accuracy"]}
    results = {"nodes": data.graph.n_nodes, "direct_edges": len(data.graph.edges), "edges": len(data.closure),
               "train_edges": len(data.train), "seed": data.seed, "seconds": time.time() - start, "models": models}
    finish_run(run_dir, results, {m.model: m.updates for m in trained})
    return results


#: Rows of the printed table: key in ``results["models"]`` and its label.
TABLE_ROWS = (("transitive_closure", "transitive closure"), ("symmetric", "order-embeddings, symmetric (cosine)"),
              ("order", "order-embeddings"))


def format_results(results: dict[str, Any]) -> str:
    """The results as the paper's table: one row per method, dev and test accuracy in percent."""
    lines = [f"WordNet nouns: {results['nodes']} synsets, {results['direct_edges']} direct edges, "
             f"{results['edges']} edges in the transitive closure; seed {results['seed']}, {results['seconds']:.0f} s",
             f"{'method':<40} {'dev %':>7} {'test %':>7}"]
    for key, label in TABLE_ROWS:
        if key in results["models"]:
            m = results["models"][key]
            lines.append(f"{label:<40} {m['dev_accuracy']:>7.2f} {m['test_accuracy']:>7.2f}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write the results object as JSON."""
    runs.atomic_write(path, (json.dumps(results, indent=2) + "\n").encode())
