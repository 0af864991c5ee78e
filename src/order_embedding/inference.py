"""Using a trained model: load it (a run folder or an original snapshot), encode sentences and images, compute errors.

These are the original project's plain names; :mod:`order_embedding` exports them.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from . import legacy, runs
from .batching import pad_batch
from .data import Split, load_split, resolve_data_dir
from .data.npy import DTYPES, NpyWriter
from .data.splits import warn_unnormalised
from .data.text import CAPTION_CHUNK, count_captions, read_caption_chunks
from .measures import measure
from .model import ModelConfig, OrderEmbeddingModel
from .options import device as parse_device
from .options import positive_int
from .vision.images import FeatureSource, ImageFiles, image_paths, pixel_inputs, pixels_to_tensor
from .vocab import Vocabulary


@dataclass
class LoadedModel:
    """A model ready for encoding: network, vocabulary, configuration and where it came from."""

    net: OrderEmbeddingModel
    vocab: Vocabulary
    #: The training options the run recorded (``data``, ``cnn``, ``margin`` ...); the snapshot's for legacy models.
    options: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    @property
    def config(self) -> ModelConfig:
        """The architecture configuration."""
        return self.net.config

    @property
    def device(self) -> torch.device:
        """Where the network's parameters live."""
        return next(self.net.parameters()).device


def default_device() -> torch.device:
    """CUDA when present, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], source: str) -> OrderEmbeddingModel:
    """A model of ``config`` holding ``state``; missing, extra or mis-shaped tensors raise :class:`runs.RunError`."""
    with torch.device("meta"):  # no initialising (or fetching) weights about to be replaced
        model = OrderEmbeddingModel(config, load_weights=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise runs.RunError(f"{source}: parameters do not match the config (missing {missing}, unexpected {extra})")
    # weights stored in another float precision compute in the model's own (float16, bfloat16, float64 alike)
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() and expected[k].is_floating_point() else v
             for k, v in state.items()}
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise runs.RunError(
                f"{source}: {name} has shape {tuple(state[name].shape)}, the config needs {tuple(tensor.shape)}"
            )
        if state[name].dtype.is_floating_point != tensor.dtype.is_floating_point:
            raise runs.RunError(f"{source}: {name} has dtype {state[name].dtype}, the model needs {tensor.dtype}")
        if state[name].dtype.is_floating_point and not torch.isfinite(state[name]).all():
            raise runs.RunError(f"{source}: {name} holds NaN or infinite values; refusing to load it")
    model.load_state_dict(state, assign=True)
    return model


def load_model(path: str | os.PathLike, device: str | torch.device | None = None, checkpoint: str = runs.BEST) -> LoadedModel:
    """Load a run folder of this project, or an original ``.pkl``/``.npz`` snapshot pair by its prefix."""
    path = Path(path)
    device = checked_device(device)
    if not path.is_dir() and legacy.is_legacy_prefix(path):
        config, state, vocab, options = legacy.load_legacy(path)
        model = build_model(config, state, str(path))
        return LoadedModel(model.to(device).eval(), vocab, dict(options), None)
    if not path.is_dir():
        raise runs.RunError(f"{path}: not a run folder, nor a snapshot prefix with {path}.pkl and {path}.npz")
    cfg = runs.load_json(path / runs.CONFIG)
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise runs.RunError(f"{path / runs.CONFIG}: no 'model' section")
    if not isinstance(cfg.get("train", {}), dict):
        raise runs.RunError(f"{path / runs.CONFIG}: the 'train' section is not a JSON object")
    try:
        config = ModelConfig.from_dict(cfg["model"])
    except (TypeError, ValueError) as e:
        raise runs.RunError(f"{path / runs.CONFIG}: {e}") from None
    vocab = Vocabulary.load(path / runs.VOCAB)
    if vocab.size > config.n_words:  # ids past the table would fail at the first caption that uses them
        raise runs.RunError(f"{path / runs.VOCAB}: {vocab.size} word ids, but the model's embedding table "
                            f"(n_words in {runs.CONFIG}) has only {config.n_words} rows")
    if not (path / checkpoint).exists() and not (path / checkpoint).is_symlink():
        raise runs.RunError(f"{path}: no checkpoint yet ({checkpoint} is written at the first validation)")
    state, _ = runs.load_tensors(path / checkpoint)
    if any(k.startswith("model.") for k in state):  # a training checkpoint: parameters beside optimizer and RNG state
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    model = build_model(config, state, str(path / checkpoint))
    return LoadedModel(model.to(device).eval(), vocab, cfg.get("train", {}), path)


def checked_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device present here (default: :func:`default_device`); one-line error otherwise."""
    if device is None:
        return default_device()
    return torch.device(parse_device(str(device)))


def _batches(n: int, batch_size: int, verbose: bool, desc: str):
    return tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not verbose)


class TextEncoder(Protocol):
    """A network that turns padded token ids into sentence vectors ``dim`` wide (the caption-image model,
    the entailment model)."""

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> Any: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


@torch.no_grad()
def encode_sentences(model: LoadedModel, sentences: Sequence[str], verbose: bool = False, batch_size: int = 128) -> np.ndarray:
    """Embeddings (float32, one row per sentence) of pre-tokenised sentences (split on whitespace)."""
    return encode_texts(model.net, model.vocab, model.config.dim, sentences, verbose, batch_size)


@torch.no_grad()
def encode_texts(net: TextEncoder, vocab: Vocabulary, dim: int, sentences: Sequence[str], verbose: bool = False,
                 batch_size: int = 128) -> np.ndarray:
    """Embeddings (float32, ``dim`` wide, one row per sentence) of pre-tokenised sentences under a network."""
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(sentences, (str, bytes)) or not all(isinstance(s, str) for s in sentences):
        raise TypeError("sentences must be a list of strings (one sentence each), "
                        f"not {type(sentences).__name__ if isinstance(sentences, (str, bytes)) else 'a list holding other values'}")
    net.eval()
    device = next(net.parameters()).device
    ids = [vocab.encode(s) for s in sentences]
    out = np.empty((len(ids), dim), dtype=np.float32)
    order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths share a batch
    for i in _batches(len(order), batch_size, verbose, "sentences"):
        chunk = order[i : i + batch_size]
        tokens, lengths = pad_batch([ids[j] for j in chunk])
        out[chunk] = net.encode_text(tokens.to(device), lengths).float().cpu().numpy()
    return out


def check_features(features: np.ndarray, dim_image: int, source: str = "features", rows: bool = True) -> np.ndarray:
    """Validate a feature matrix (2-D, ``dim_image`` wide, numbers; with ``rows``, also finite, with a warning
    for rows that are not L2-normalised); returns it as an array."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{source}: expected a 2-D images x features array, got shape {features.shape}")
    if features.shape[1] != dim_image:
        raise ValueError(f"{source}: features are {features.shape[1]}-dimensional, the model expects {dim_image}")
    if features.dtype.kind not in "fiu":
        raise ValueError(f"{source}: features must be numbers, got dtype {features.dtype}")
    if not rows:
        return features
    bad = 0
    if features.dtype.kind == "f":  # checked as the model computes with them: float64 beyond float32's range is inf
        with np.errstate(over="ignore"):
            for i in range(0, len(features), 65536):
                bad += int((~np.isfinite(np.asarray(features[i : i + 65536], np.float32))).any(axis=1).sum())
    if bad:
        raise ValueError(f"{source}: {bad} feature row(s) contain NaN or infinity (as float32)")
    warn_unnormalised(features, source)
    return features


@torch.no_grad()
def encode_images(model: LoadedModel, features: np.ndarray, verbose: bool = False, batch_size: int = 1024,
                  source: str = "features", checked: bool = False) -> np.ndarray:
    """Embeddings (float32) of images: L2-normalised CNN feature rows, or pixels (uint8 ``N x 3 x H x W``) for backbone
    models; errors about the features name ``source`` (their file).

    ``checked``: the feature rows were validated when they were read (a :class:`Split`'s, by
    :func:`load_split`), so only their shape is checked here.
    """
    batch_size = positive_int(batch_size, "batch_size")
    net = model.net.eval()
    if model.config.backbone is None:
        features = check_features(features, model.config.dim_image, source, rows=not checked)
    if isinstance(features, ImageFiles):  # image files decoded per batch into crops
        batch_size = min(batch_size, features.batch_size)
    out = np.empty((len(features), model.config.dim), dtype=np.float32)
    for i in _batches(len(features), batch_size, verbose, "images"):
        chunk = features[i : i + batch_size]
        if isinstance(chunk, torch.Tensor):
            x = chunk
        elif isinstance(chunk, np.ndarray) and chunk.dtype == np.uint8:
            x = pixels_to_tensor(chunk)
        else:
            x = torch.from_numpy(np.array(chunk, dtype=np.float32))  # a copy: inputs may be read-only maps
        out[i : i + batch_size] = net.encode_image(x.to(model.device)).float().cpu().numpy()
    return out


def split_input(config: ModelConfig, split: Split, train: bool = False, verbose: bool = False) -> Any:
    """What a model of ``config`` reads of a split's images, the one place that decides features or pixels:
    its feature rows (as a :class:`FeatureSource` for training), or, for a pixel backbone, its image files
    decoded (with the training augmentation when ``train``)."""
    backbone = config.backbone
    if backbone is None:
        if split.features is None:
            raise ValueError(f"split {split.name!r} has no image features; the model needs {config.dim_image}-d features")
        return FeatureSource(split.features) if train else split.features
    if split.image_files is None:
        raise ValueError(f"split {split.name!r} lists no image files; the model reads pixels")
    return pixel_inputs(image_paths(split.image_files, split.image_root), backbone, config.backbone_options,
                        train=train, verbose=verbose)


def split_images(model: LoadedModel, split: Split, verbose: bool = False) -> np.ndarray:
    """The model's image input for a split at evaluation (see :func:`split_input`)."""
    return split_input(model.config, split, False, verbose)


def check_image_files(model: LoadedModel, paths: Sequence[str | os.PathLike]) -> None:
    """Raise a one-line error unless the model reads pixels and every path is a file."""
    if model.config.backbone is None:
        raise ValueError(f"this model reads {model.config.dim_image}-d CNN features, not image files; "
                         "extract them first with 'order-embedding extract-features'")
    missing = next((p for p in paths if not Path(p).is_file()), None)
    if missing is not None:
        raise ValueError(f"{missing}: image file not found")


def images_from_files(model: LoadedModel, paths: Sequence[str | os.PathLike], verbose: bool = False):
    """The input :func:`encode_images` takes for image files under a pixel model: evaluation crops decoded
    per batch (torchvision backbones) or resized pixels (the small CNN)."""
    check_image_files(model, paths)
    return image_input(model, paths, verbose)


def image_input(model: LoadedModel, paths: Sequence[str | os.PathLike], verbose: bool = False):
    """:func:`images_from_files` for paths already checked by :func:`check_image_files`."""
    assert model.config.backbone is not None  # check_image_files requires a pixel model
    return pixel_inputs(paths, model.config.backbone, model.config.backbone_options, train=False, verbose=verbose)


def split_source(options: dict[str, Any], data: str | os.PathLike | None = None, cnn: str | None = None,
                 image_root: str | os.PathLike | None = None,
                 run_dir: str | os.PathLike | None = None) -> tuple[Path, str, str | None]:
    """:func:`runs.run_data` with the data set resolved to its folder."""
    data, cnn, root = runs.run_data(options, data, cnn, image_root, run_dir)
    return resolve_data_dir(data), cnn, root


def model_split(model: LoadedModel, split: str, data: str | os.PathLike | None = None, cnn: str | None = None,
                image_root: str | os.PathLike | None = None) -> Split:
    """A split of the data set the model was trained on, or of ``data``; features and image root as in training
    unless given (see :func:`runs.run_data`)."""
    data_dir, cnn, root = split_source(model.options, data, cnn, image_root, model.run_dir)
    return load_split(data_dir, split, cnn=cnn, image_root=root)


def encode_split(model: LoadedModel, split: Split, verbose: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(caption embeddings, image embeddings)`` of a whole split."""
    return (
        encode_sentences(model, split.captions, verbose=verbose),
        encode_images(model, split_images(model, split, verbose), verbose=verbose, checked=True),
    )


def compute_errors(model: LoadedModel, s: np.ndarray, im: np.ndarray) -> np.ndarray:
    """Captions x images error matrix: order-violation penalty, or minus the dot product for the symmetric model."""
    return measure(model.config.method).errors(np.asarray(s, np.float32), np.asarray(im, np.float32))


def encode_captions_file(model: LoadedModel, captions: str | os.PathLike, out: str | os.PathLike,
                         dtype: str = "float32", chunk: int = CAPTION_CHUNK, batch_size: int = 128,
                         verbose: bool = False) -> tuple[int, int]:
    """Embed every line of a caption file into an ``.npy`` (written atomically), a chunk of lines at a time.

    Memory stays bounded by the chunk, whatever the number of captions. Returns the shape.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    batch_size, chunk = positive_int(batch_size, "batch_size"), positive_int(chunk, "chunk")
    out = Path(out)
    n = count_captions(captions)  # a first pass finds bad lines before any work
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    writer = NpyWriter(tmp, (n, model.config.dim), dtype)
    try:
        with tqdm(total=n, desc="captions", unit="caption", disable=not verbose) as bar:
            for lines in read_caption_chunks(captions, chunk):
                writer.write(encode_sentences(model, lines, batch_size=batch_size))
                bar.update(len(lines))
        writer.close()
        os.replace(tmp, out)
    except runs.DiskFullError:
        tmp.unlink(missing_ok=True)  # before measuring the free space
        raise runs.disk_full(out, writer.nbytes) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return n, model.config.dim
