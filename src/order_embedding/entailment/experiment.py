"""The textual-entailment experiment (reference section 9): train the order model and its symmetric
variant on premise-hypothesis pairs, pick each one's threshold on dev, and compare them on test with a
majority-class and a word-overlap baseline.

Two classes: entailment against the rest (neutral and contradiction). A pair is predicted
entailed when its error is at most the threshold that maximises dev accuracy; test accuracy
is reported at that threshold, next to the figure the original's evaluation script gave
(the threshold chosen on test itself, an oracle, labelled as such), and split by gold class.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import loop, options, runs
from ..batching import pad_batch
from ..evaluation import accuracy_at, best_threshold
from ..inference import encode_texts
from ..loss import pair_hinge_loss
from ..measures import MEASURES, MODELS
from ..optim import clip_gradients, flush_denormals, make_optimizer
from ..vocab import Vocabulary
from .model import EntailmentModel, EntailmentModelConfig, pair_errors
from .snli import LABELS, SPLITS, Pairs

#: Run-folder file with the final results (a superset of what ``--json`` writes).
RESULTS = "results.json"
#: The models of the results table, in its order, with their labels.
TABLE_ROWS = (("majority", "majority class"), ("word_overlap", "word overlap (thresholded on dev)"),
              ("symmetric", "order-embeddings, symmetric (cosine)"), ("order", "order-embeddings"))


class RunExistsError(ValueError):
    """The run folder already holds a run."""


#: The options of ``order-embedding entailment``: its data, the training options shared with ``train`` (same
#: flags and rules; defaults of reference section 9), then the run's.
OPTIONS: tuple[options.Option, ...] = (
    options.Option("snli", None, options.optional(options.text), "folder with snli_1.0_{train,dev,test}.jsonl or "
                   ".txt, or the original's {train,dev,test}.txt", True, metavar="DIR"),
    *(options.Option(f"{split}_file", None, options.optional(options.text), f"read the {split} split from this "
                     "file instead (e.g. a MultiNLI .jsonl)", True, metavar="FILE") for split in SPLITS),
    options.Option("quick", False, options.boolean, "a small generated corpus (1200/200/200 scenes) and short "
                   "training, under a minute"),
    options.Option("scenes", None, options.optional(options.positive_int), "scenes of the generated corpus per "
                   "split", metavar=("TRAIN", "DEV", "TEST"), nargs=3),
    options.Option("corpus_seed", 0, options.seed, "seed of the generated corpus"),
    options.shared("dim", 1024, "sentence-vector (GRU state) size"),
    options.shared("dim_word", 300, "word-vector size"),
    options.shared("margin", 0.2, "hinge margin for pairs that are not entailed", rule=options.positive_number),
    options.shared("max_epochs", 15, "passes over the training pairs"),
    options.shared("batch_size", 128, "pairs per update (the last partial batch of an epoch is dropped)"),
    options.shared("lrate", 0.001, "learning rate"),
    options.shared("validFreq", 100, "dev accuracy every this many updates (and after the last); the best "
                   "parameters are kept"),
    options.shared("dispFreq", 10, "log the training loss every this many updates"),
    options.shared("grad_clip", 2.0, "rescale the gradients to this global L2 norm when above it (0: no clipping)",
                   rule=options.non_negative_number),
    options.shared("optimizer", "adam_original", "adam_original (the original's Adam rule) or adam (textbook)"),
    options.shared("n_words", None, "vocabulary size, rarer words become unknown"),
    options.shared("seed", 1234, "seed of the initialisation and batch order"),
    options.shared("lowercase", False, "lower-case every word"),
    options.NO_SYMMETRIC,
    options.shared("save_dir"),
    options.shared("name", "entailment"),
    options.shared("device", help="torch device (null: CUDA when present)"),
    options.RESUME_RUN,
    options.JSON,
    options.TENSORBOARD,
    options.THREADS,
    options.QUIET,
)
#: Each option by name.
BY_NAME = {o.name: o for o in OPTIONS}


@dataclass
class EntailmentConfig:
    """The trainer's hyperparameters, named as the original's ``trainer`` (defaults: reference section 9), each
    checked by its option's rule (:data:`OPTIONS`)."""

    dim: int = BY_NAME["dim"].default
    dim_word: int = BY_NAME["dim_word"].default
    margin: float = BY_NAME["margin"].default
    max_epochs: int = BY_NAME["max_epochs"].default
    batch_size: int = BY_NAME["batch_size"].default
    lrate: float = BY_NAME["lrate"].default
    validFreq: int = BY_NAME["validFreq"].default
    dispFreq: int = BY_NAME["dispFreq"].default
    grad_clip: float = BY_NAME["grad_clip"].default
    optimizer: str = BY_NAME["optimizer"].default
    n_words: int | None = None
    lowercase: bool = False
    seed: int = BY_NAME["seed"].default

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, BY_NAME[f.name].parse(getattr(self, f.name)))


@dataclass
class Encoded:
    """One split as the model reads it: token ids of both sentences, binary targets and gold labels."""

    pairs: Pairs
    premises: list[list[int]]
    hypotheses: list[list[int]]
    entailed: np.ndarray


def build_vocabulary(data: dict[str, Pairs], config: EntailmentConfig) -> Vocabulary:
    """Words of the train and dev sentences by frequency (the original's dictionary)."""
    sentences = [s for split in ("train", "dev") for s in data[split].premises + data[split].hypotheses]
    return Vocabulary.build(sentences, n_words=config.n_words, lowercase=config.lowercase)


def encode_split(pairs: Pairs, vocab: Vocabulary) -> Encoded:
    """Token ids and targets of one split."""
    return Encoded(pairs, [vocab.encode(s) for s in pairs.premises], [vocab.encode(s) for s in pairs.hypotheses],
                   np.array(pairs.entailed(), dtype=bool))


@torch.no_grad()
def sentence_errors(net: EntailmentModel, vocab: Vocabulary, premises: list[str], hypotheses: list[str]) -> np.ndarray:
    """Errors (float64) of aligned tokenised premises and hypotheses under a network."""
    if len(premises) != len(hypotheses):
        raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
    if not premises:
        return np.zeros(0)
    p = torch.from_numpy(encode_texts(net, vocab, net.config.dim, premises, batch_size=512))
    h = torch.from_numpy(encode_texts(net, vocab, net.config.dim, hypotheses, batch_size=512))
    return pair_errors(p, h, net.config.method).double().numpy()


def split_errors(net: EntailmentModel, vocab: Vocabulary, pairs: Pairs) -> np.ndarray:
    """Errors (float64) of every pair of a split under a network."""
    return sentence_errors(net, vocab, pairs.premises, pairs.hypotheses)


def per_class(predicted: np.ndarray, labels: list[str]) -> dict[str, float | None]:
    """Percent of each gold class decided right (entailment: predicted entailed; the others: not)."""
    gold = np.asarray(labels)
    out: dict[str, float | None] = {}
    for label in LABELS:
        rows = gold == label
        want = label == "entailment"
        out[label] = 100 * float(np.mean(predicted[rows] == want)) if rows.any() else None
    return out


def threshold_results(dev_errors: np.ndarray, dev: Encoded, test_errors: np.ndarray, test: Encoded) -> dict[str, Any]:
    """Dev-chosen threshold and accuracies (percent), the test-chosen (oracle) accuracy and the per-class breakdown."""
    threshold, dev_acc = best_threshold(dev_errors, dev.entailed)
    _, oracle = best_threshold(test_errors, test.entailed)
    return {"dev_accuracy": 100 * dev_acc, "test_accuracy": 100 * accuracy_at(test_errors, test.entailed, threshold),
            "oracle_test_accuracy": 100 * oracle, "threshold": threshold,
            "per_class": per_class(test_errors <= threshold, test.pairs.labels)}


def majority_baseline(train: Encoded, dev: Encoded, test: Encoded) -> dict[str, Any]:
    """Always the binary class most frequent in train; the oracle figure uses test's own majority."""
    guess = bool(train.entailed.mean() > 0.5)
    return {"dev_accuracy": 100 * float(np.mean(dev.entailed == guess)),
            "test_accuracy": 100 * float(np.mean(test.entailed == guess)),
            "oracle_test_accuracy": 100 * max(float(test.entailed.mean()), 1 - float(test.entailed.mean())),
            "threshold": None, "per_class": per_class(np.full(len(test.entailed), guess), test.pairs.labels)}


def word_overlap(pairs: Pairs) -> np.ndarray:
    """Fraction of each hypothesis' tokens that occur in its premise (1 for an empty hypothesis)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for k, (p, h) in enumerate(zip(pairs.premises, pairs.hypotheses)):
        words, hyp = set(p.split()), h.split()
        out[k] = sum(w in words for w in hyp) / len(hyp) if hyp else 1.0
    return out


def overlap_baseline(dev: Encoded, test: Encoded) -> dict[str, Any]:
    """Entailed iff the word overlap is at least a threshold chosen on dev (reported as that overlap)."""
    result = threshold_results(-word_overlap(dev.pairs), dev, -word_overlap(test.pairs), test)
    result["threshold"] = -result["threshold"]
    return result


@dataclass
class TrainedVariant:
    """One trained variant: its best network on dev, the update it came from, and its results."""

    name: str
    net: EntailmentModel
    best_uidx: int
    updates: int
    seconds: float
    results: dict[str, Any] = field(default_factory=dict)


def save_best(run_dir: Path, trained: dict[str, TrainedVariant], thresholds: dict[str, float]) -> None:
    """Write the best parameters of every variant so far to ``model.safetensors`` (keys ``<variant>.<name>``)."""
    tensors = {f"{name}.{k}": v for name, t in trained.items() for k, v in t.net.state_dict().items()}
    runs.save_tensors(run_dir / runs.BEST, tensors, {"thresholds": thresholds,
                                                     "best_uidx": {n: t.best_uidx for n, t in trained.items()}})


class EntailmentTrainee:
    """One variant as :func:`order_embedding.loop.train_loop` trains it: both sentences through the encoder,
    the summed hinge loss, global gradient clipping and Adam."""

    def __init__(self, name: str, data: dict[str, Encoded], vocab: Vocabulary, config: EntailmentConfig,
                 run_dir: Path | None, finished: dict[str, TrainedVariant], thresholds: dict[str, float],
                 device: torch.device) -> None:
        self.name, self.vocab, self.cfg, self.run_dir, self.device = name, vocab, config, run_dir, device
        self.finished, self.thresholds = finished, thresholds
        self.train, self.dev = data["train"], data["dev"]
        self.n_batches = len(self.train.entailed) // config.batch_size  # the last partial batch is dropped, as the original did
        if self.n_batches == 0:
            raise ValueError(f"{len(self.train.entailed)} training pairs do not fill one batch of {config.batch_size}")
        seed = int(np.random.SeedSequence([config.seed, list(MEASURES).index(MODELS[name])]).generate_state(1)[0])
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.net = EntailmentModel(EntailmentModelConfig(vocab.size, config.dim_word, config.dim, MODELS[name])).to(device)
        self.best_net = EntailmentModel(self.net.config).to(device)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(config.optimizer, [{"params": params, "lr": config.lrate}], config.lrate)
        self.targets = torch.from_numpy(self.train.entailed)

    def batches(self, epoch: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Row indices of the training pairs, shuffled, in full batches."""
        order = rng.permutation(len(self.train.entailed))
        bs = self.cfg.batch_size
        return [order[b * bs:(b + 1) * bs] for b in range(self.n_batches)]

    def learning_rates(self, state: loop.TrainState) -> list[float]:
        """A constant rate."""
        return [self.cfg.lrate]

    def loss(self, rows: np.ndarray) -> tuple[torch.Tensor, int]:
        """The summed hinge loss of the batch's pairs."""
        tokens, lengths = pad_batch([self.train.premises[i] for i in rows] + [self.train.hypotheses[i] for i in rows])
        v = self.net.encode_text(tokens.to(self.device), lengths)
        errors = self.net.errors(v[:len(rows)], v[len(rows):])
        return pair_hinge_loss(errors, self.targets[rows].to(self.device), self.cfg.margin, "sum"), len(rows)

    def step(self, loss: torch.Tensor) -> None:
        """Backward pass, global gradient clipping and the optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(self.net, self.cfg.grad_clip, "global")
        self.optimizer.step()

    def validate(self) -> dict[str, Any]:
        """Dev accuracy (percent) at the best threshold; the score is the accuracy as a fraction."""
        threshold, acc = best_threshold(split_errors(self.net, self.vocab, self.dev.pairs), self.dev.entailed)
        self.net.train()
        return {"dev_accuracy": 100 * acc, "threshold": threshold, "score": acc}

    def describe(self, result: dict[str, Any]) -> None:
        """No line: the progress bar shows the loss."""
        return None

    def save_best(self, state: loop.TrainState, result: dict[str, Any]) -> None:
        """Keep the parameters and threshold; write them with the finished variants' to the run folder."""
        self.best_net.load_state_dict(self.net.state_dict())
        self.thresholds[self.name] = result["threshold"]
        if self.run_dir is not None:
            save_best(self.run_dir, {**self.finished, self.name: TrainedVariant(self.name, self.best_net, state.uidx, 0, 0.0)},
                      self.thresholds)

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Parameters, Adam's moments and the best parameters with their threshold."""
        best = {f"best.{k}": v for k, v in self.best_net.state_dict().items()}
        return {**loop.optimizer_tensors(self.net, self.optimizer), **best}, {"threshold": self.thresholds.get(self.name)}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> None:
        """Inverse of :meth:`state_tensors`."""
        best = {k[5:]: tensors.pop(k) for k in [k for k in tensors if k.startswith("best.")]}
        try:
            self.best_net.load_state_dict(best)
        except RuntimeError:
            raise runs.RunError(f"{source}: its best parameters do not fit the {self.name} model") from None
        loop.load_optimizer_tensors(self.net, self.optimizer, tensors, source)
        if isinstance(meta.get("threshold"), (int, float)):
            self.thresholds[self.name] = float(meta["threshold"])


@flush_denormals()  # Adam's moments of words no batch uses decay towards the subnormal range
def train_variant(name: str, data: dict[str, Encoded], vocab: Vocabulary, config: EntailmentConfig,
                  run_dir: Path | None, saved: dict[str, TrainedVariant], thresholds: dict[str, float],
                  device: torch.device, progress: bool = True, tensorboard: Any = None) -> TrainedVariant:
    """Train one variant (``order`` or ``symmetric``) and keep its parameters of best dev accuracy.

    Every ``validFreq`` updates (and after the last) the dev threshold and accuracy are
    computed; a new best is written to the run folder with the variants ``saved`` before it.
    With ``run_dir``, training resumes from the variant's checkpoint there.
    """
    trainee = EntailmentTrainee(name, data, vocab, config, run_dir, saved, thresholds, device)
    files = loop.RunFiles(run_dir, runs.checkpoint_name(name), {"model": name}, tensorboard=tensorboard)
    schedule = loop.Schedule(config.max_epochs, config.validFreq, config.dispFreq)
    state, resumed = loop.start_state(files, trainee, trainee.rng, progress, limits=(config.max_epochs, trainee.n_batches))
    trainee.net.train()
    state = loop.train_loop(trainee, schedule, files, trainee.rng, state, resumed, progress)
    trainee.best_net.eval()
    return TrainedVariant(name, trainee.best_net, state.best_uidx, state.uidx, state.seconds)


def check_new_run(run_dir: Path, resume: bool = False) -> None:
    """Refuse a folder that already holds a run, unless it is to be resumed."""
    if (Path(run_dir) / runs.CONFIG).exists() and not resume:
        raise RunExistsError(f"{run_dir} already holds a run; choose another --name or --save_dir, "
                             "or continue it with --resume")


def prepare_run_dir(run_dir: Path, resume: bool = False) -> Path:
    """Create the folder of a new run (refusing one that holds a run unless ``resume``)."""
    check_new_run(run_dir, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / runs.CONFIG).exists():
        (run_dir / runs.METRICS).unlink(missing_ok=True)
    return run_dir


def run_experiment(data: dict[str, Pairs], config: EntailmentConfig, run_dir: str | Path | None, source: str,
                   variants: tuple[str, ...] = ("order", "symmetric"), device: str | torch.device | None = None,
                   progress: bool = True, started: float | None = None, resume: bool = False,
                   tensorboard: str | Path | None = None) -> dict[str, Any]:
    """Train the variants, run the baselines and return the results (accuracies in percent).

    With ``run_dir`` (created by :func:`prepare_run_dir` or new), it receives ``config.json``
    (``kind: entailment``), ``vocab.json``, ``metrics.jsonl``, ``model.safetensors`` and ``results.json``;
    with ``resume``, a run folder holding this run continues from its checkpoints; with ``tensorboard``, the
    metrics also go to that folder as TensorBoard scalars.
    """
    start = time.time() if started is None else started
    device = torch.device(device or "cpu")
    unknown = [v for v in variants if v not in MODELS]
    if unknown or not variants:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(MODELS)}")
    vocab = build_vocabulary(data, config)
    encoded = {split: encode_split(data[split], vocab) for split in SPLITS}
    counts = {split: len(data[split]) for split in SPLITS}
    counts["dropped"] = sum(data[split].dropped for split in SPLITS)
    writer = loop.tensorboard_writer(tensorboard)
    if run_dir is None:
        return _run(encoded, vocab, config, None, source, counts, variants, device, progress, start, writer)
    run_dir = Path(run_dir)
    recorded = {
        "kind": "entailment",
        "model": {"n_words": vocab.size, "dim_word": config.dim_word, "dim": config.dim,
                  "methods": {v: MODELS[v] for v in variants}},
        "train": {v: asdict(config) for v in variants},
        "data": {"source": source, "pairs": counts, **{f"{s}_file": data[s].source for s in SPLITS}},
    }
    resumed = loop.check_new_or_resumed(run_dir, recorded, resume)
    lock = runs.lock_run(run_dir)
    try:
        if not resumed:
            vocab.save(run_dir / runs.VOCAB)
            runs.save_json(run_dir / runs.CONFIG, recorded)
        return _run(encoded, vocab, config, run_dir, source, counts, variants, device, progress, start, writer)
    finally:
        lock.close()
        if writer is not None:
            writer.close()


def _run(encoded: dict[str, Encoded], vocab: Vocabulary, config: EntailmentConfig, run_dir: Path | None, source: str,
         counts: dict[str, int], variants: tuple[str, ...], device: torch.device, progress: bool,
         start: float, writer: Any) -> dict[str, Any]:
    models: dict[str, Any] = {}
    trained: dict[str, TrainedVariant] = {}
    thresholds: dict[str, float] = {}
    for name in variants:
        t = train_variant(name, encoded, vocab, config, run_dir, trained, thresholds, device, progress, writer)
        trained[name] = t
        dev_e = split_errors(t.net, vocab, encoded["dev"].pairs)
        test_e = split_errors(t.net, vocab, encoded["test"].pairs)
        t.results = threshold_results(dev_e, encoded["dev"], test_e, encoded["test"])
        models[name] = {**t.results, "best_uidx": t.best_uidx, "updates": t.updates, "seconds": t.seconds}
    models["majority"] = majority_baseline(encoded["train"], encoded["dev"], encoded["test"])
    models["word_overlap"] = overlap_baseline(encoded["dev"], encoded["test"])
    results = {"data": source, "pairs": counts, "seconds": time.time() - start, "models": models}
    if run_dir is not None:
        runs.save_json(run_dir / RESULTS, results)
        loop.finish(run_dir, {"updates": {n: t.updates for n, t in trained.items()}, "seconds": results["seconds"]})
    return results


#: The keys of each model in the ``--json`` object.
JSON_KEYS = ("dev_accuracy", "test_accuracy", "oracle_test_accuracy", "threshold")


def json_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object: data, pair counts, seconds and each model's four figures."""
    return {"data": results["data"], "pairs": results["pairs"], "seconds": results["seconds"],
            "models": {name: {k: m[k] for k in JSON_KEYS} for name, m in results["models"].items()}}


def write_json(results: dict[str, Any], path: str | Path) -> None:
    """Write :func:`json_summary` of the results, atomically."""
    runs.atomic_write(path, (json.dumps(json_summary(results), indent=2) + "\n").encode())


def _cell(x: float | None) -> str:
    return f"{x:>8.2f}" if x is not None and math.isfinite(x) else f"{'-':>8}"


def format_results(results: dict[str, Any]) -> str:
    """The results as a table: dev, test (dev threshold) and oracle test accuracy, then test accuracy by gold class."""
    p = results["pairs"]
    lines = [f"{results['data']}: {p['train']} train, {p['dev']} dev, {p['test']} test pairs "
             f"({p['dropped']} without a gold label dropped); {results['seconds']:.0f} s",
             f"{'method':<38} {'dev %':>8} {'test %':>8} {'oracle %':>8} | {'entail':>8} {'neutral':>8} {'contra':>8}"]
    for key, label in TABLE_ROWS:
        if key in results["models"]:
            m = results["models"][key]
            c = m["per_class"]
            lines.append(f"{label:<38} {_cell(m['dev_accuracy'])} {_cell(m['test_accuracy'])} "
                         f"{_cell(m['oracle_test_accuracy'])} | {_cell(c['entailment'])} {_cell(c['neutral'])} "
                         f"{_cell(c['contradiction'])}")
    lines.append("test %: at the threshold chosen on dev; oracle %: at the threshold chosen on test itself (the "
                 "original script's figure, an upper bound); entail/neutral/contra: test % right within each gold class")
    return "\n".join(lines)
