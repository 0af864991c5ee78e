"""The original project's pre-trained snapshots: a ``PREFIX.pkl`` + ``PREFIX.npz`` pair.

``PREFIX.pkl`` is a Python 2 pickle of ``{"options": {...}, "worddict": OrderedDict}``
and ``PREFIX.npz`` holds the Theano parameters as float32 arrays (row vectors
multiply on the left, ``x . W``):

=============== ======================== ==========================================
array           shape                    meaning
=============== ======================== ==========================================
``Wemb``        n_words x dim_word       word table (0 end-of-sentence, 1 unknown)
``encoder_W``   dim_word x 2*dim         input weights of the reset, then update gate
``encoder_b``   2*dim                    biases of the reset, then update gate
``encoder_U``   dim x 2*dim              recurrent weights of the reset, then update gate
``encoder_Wx``  dim_word x dim           input weights of the candidate state
``encoder_bx``  dim                      bias of the candidate state
``encoder_Ux``  dim x dim                recurrent weights of the candidate state
``ff_image_W``  dim_image x dim          image map
``ff_image_b``  dim                      image map bias
=============== ======================== ==========================================

Nothing is executed while reading: the pickle goes through a restricted unpickler
that admits only plain containers, strings, numbers, booleans, ``None``,
``collections.OrderedDict`` and ``_codecs.encode`` restricted to what a protocol-2
pickle written by Python 3 uses it for (bytes from their latin-1 text), and the
arrays are read with ``allow_pickle=False``; arrays holding NaN or infinity are refused.

Vocabulary. The original encodes a caption as ``worddict[w]`` for each token ``w``
of ``caption.split()`` when ``w`` is in the worddict and its index is below
``n_words``, and 1 (unknown) otherwise. The converted model reproduces that
function of the caption exactly:

- A Python 3 caption ``s`` stands for the Python 2 byte string ``s.encode("utf-8")``
  (the original read its UTF-8 caption files as bytes), so byte-string words are
  decoded as UTF-8; byte-string words that are not valid UTF-8 can match no such
  caption and are dropped. Python 2 unicode words are kept as they are. Should a
  unicode word and a byte-string word give the same text, the byte-string word's
  id is kept.
- Entries the original always encodes as unknown are dropped: index 1, index
  ``>= n_words``, and words that no whitespace split can produce (empty or
  containing whitespace).
- A worddict that maps the words to exactly ``2 .. n_words-1`` keeps its ids and
  its word table unchanged. Otherwise (unused ids, several words sharing an id, a
  word mapped to the end-of-sentence id 0) the words are renumbered ``2, 3, ...``
  in the order of their original ids and each gets a copy of its original row
  of ``Wemb``, so every caption still reaches the same embedding rows; unused
  rows are left out.

Captions are split with Python 3's ``str.split()``, which also splits at non-ASCII
whitespace (such as U+00A0) where the original's byte-string split did not; for
captions without such characters the encodings agree.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs
from .measures import MEASURES
from .model import ModelConfig
from .options import OptionError, integer
from .vocab import EOS, UNK, Vocabulary


def _bytes_from_text(text: Any, encoding: Any = "latin-1") -> bytes:
    """What ``_codecs.encode`` does in a pickle that Python 3 wrote with protocol 2: a ``bytes`` value from its
    latin-1 text. Any other use of the call is refused."""
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refusing the pickle: _codecs.encode called with {type(text).__name__}, {encoding!r} "
                                "(only text and 'latin1', which make bytes)")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise UnsafePickleError("refusing the pickle: _codecs.encode given text outside latin-1") from None


#: The only globals a snapshot pickle may name: ``_codecs.encode`` only builds bytes (see :func:`_bytes_from_text`).
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {("collections", "OrderedDict"): OrderedDict,
                                              ("_codecs", "encode"): _bytes_from_text}
#: The value types a snapshot pickle may produce.
ALLOWED_TYPES: tuple[type, ...] = (dict, OrderedDict, list, tuple, set, frozenset, str, bytes, int, float, bool, type(None))
#: Option keys that define the network.
MODEL_OPTIONS = ("n_words", "dim_word", "dim", "dim_image", "method", "abs", "encoder")
#: The arrays of a snapshot, in the order of the table above.
ARRAYS = ("Wemb", "encoder_W", "encoder_b", "encoder_U", "encoder_Wx", "encoder_bx", "encoder_Ux", "ff_image_W", "ff_image_b")


class LegacySnapshotError(ValueError):
    """A snapshot pair is missing, incomplete, malformed or unsupported."""


class UnsafePickleError(LegacySnapshotError):
    """A pickle asks for something other than plain data; nothing of it was run."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves no global except those of :data:`ALLOWED_GLOBALS`."""

    def __init__(self, data: bytes, source: str, encoding: str) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        raise UnsafePickleError(
            f"{self.source}: refusing to load the pickle: it references {module}.{name}; "
            "only plain containers, strings, bytes, numbers, booleans, None and collections.OrderedDict are allowed"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing to load the pickle: it uses a persistent id")


def _check_plain(obj: Any, source: str) -> None:
    """Raise :class:`UnsafePickleError` if ``obj`` holds anything but allowed plain values."""
    stack, seen = [obj], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if type(x) not in ALLOWED_TYPES:
            raise UnsafePickleError(f"{source}: refusing the pickle: it holds a {type(x).__name__} value")
        if isinstance(x, OrderedDict) and vars(x):
            raise UnsafePickleError(f"{source}: refusing the pickle: an OrderedDict carries attributes {sorted(vars(x))}")
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(x)


def safe_loads(data: bytes, source: str = "pickle", encoding: str = "latin-1") -> Any:
    """The plain data of a (Python 2 or 3) pickle, refusing any class, function or other global before it runs.

    Python 2 byte strings are decoded with ``encoding`` (``"bytes"`` keeps them as bytes).
    Errors name ``source``.
    """
    try:
        obj = _RestrictedUnpickler(data, source, encoding).load()
    except UnsafePickleError as e:
        raise e if str(e).startswith(source) else UnsafePickleError(f"{source}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as e:
        raise LegacySnapshotError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None
    _check_plain(obj, source)
    return obj


#: Deepest nesting of containers decoded from a snapshot's options (the original's are 2 deep).
MAX_DEPTH = 100
#: Largest snapshot pickle read (the original's options and word dictionary take a few MB).
MAX_PICKLE_BYTES = 2**28


def _latin1(obj: Any, source: Path, depth: int = 0) -> Any:
    """``obj`` with every byte string decoded as latin-1 (dict keys included); containers nested deeper than
    :data:`MAX_DEPTH` raise :class:`LegacySnapshotError` naming ``source``."""
    if depth > MAX_DEPTH:
        raise LegacySnapshotError(f"{source}: containers nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, dict):
        return type(obj)((_latin1(k, source, depth + 1), _latin1(v, source, depth + 1)) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(_latin1(v, source, depth + 1) for v in obj)
    return obj


def snapshot_paths(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """``(PREFIX.pkl, PREFIX.npz)``; a path ending in ``.pkl`` or ``.npz`` names its pair."""
    p = str(prefix)
    if p.endswith((".pkl", ".npz")):
        p = p[:-4]
    return Path(p + ".pkl"), Path(p + ".npz")


def is_legacy_prefix(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an original snapshot (``path.pkl`` or ``path.npz`` exists) rather than a run folder."""
    if Path(path).is_dir():
        return False
    pkl, npz = snapshot_paths(path)
    return pkl.is_file() or npz.is_file()


def _int_option(options: dict[str, Any], key: str, source: Path, minimum: int) -> int:
    try:
        return integer(options[key], f"option {key}", minimum, allow_text=False)
    except OptionError as e:
        raise LegacySnapshotError(f"{source}: {e}") from None


def read_options(pkl_path: Path) -> tuple[dict[str, Any], dict[Any, Any]]:
    """``(options, worddict)`` of a snapshot pickle; options with text decoded, worddict keys as pickled."""
    try:
        data = runs.read_regular(pkl_path, MAX_PICKLE_BYTES, "snapshot pickle")
    except runs.RunError as e:
        raise LegacySnapshotError(str(e)) from None
    # Keep Python 2 byte strings as bytes so that the word keys can be decoded as UTF-8 below.
    obj = safe_loads(data, str(pkl_path), encoding="bytes")
    if not isinstance(obj, dict):
        raise LegacySnapshotError(f"{pkl_path}: expected a pickled dict with 'options' and 'worddict', got a {type(obj).__name__}")
    top = {_latin1(k, pkl_path): v for k, v in obj.items()}
    missing = [k for k in ("options", "worddict") if k not in top]
    if missing:
        raise LegacySnapshotError(f"{pkl_path}: no {' or '.join(repr(k) for k in missing)} in the pickled dict (keys: {sorted(map(str, top))})")
    options, worddict = _latin1(top["options"], pkl_path), top["worddict"]
    if not isinstance(options, dict):
        raise LegacySnapshotError(f"{pkl_path}: 'options' is a {type(options).__name__}, not a dict")
    if not isinstance(worddict, dict):
        raise LegacySnapshotError(f"{pkl_path}: 'worddict' is a {type(worddict).__name__}, not a dict")
    return options, worddict


def _model_config(options: dict[str, Any], pkl_path: Path) -> ModelConfig:
    """The architecture the options describe (``n_words`` as in the options), validated."""
    missing = [k for k in MODEL_OPTIONS if k not in options]
    if missing:
        raise LegacySnapshotError(f"{pkl_path}: options lack {', '.join(missing)}")
    if options["encoder"] != "gru":
        raise LegacySnapshotError(f"{pkl_path}: encoder {options['encoder']!r} is not supported (only 'gru')")
    if options["method"] not in MEASURES:
        raise LegacySnapshotError(f"{pkl_path}: method {options['method']!r} is not supported (only {', '.join(MEASURES)})")
    if options["abs"] not in (True, False):
        raise LegacySnapshotError(f"{pkl_path}: option abs must be true or false, got {options['abs']!r}")
    return ModelConfig(
        n_words=_int_option(options, "n_words", pkl_path, 2),
        dim_word=_int_option(options, "dim_word", pkl_path, 1),
        dim=_int_option(options, "dim", pkl_path, 1),
        dim_image=_int_option(options, "dim_image", pkl_path, 1),
        method=options["method"],
        abs=bool(options["abs"]),
        encoder="gru",
    )


def read_arrays(npz_path: Path, config: ModelConfig, pkl_path: Path) -> dict[str, np.ndarray]:
    """The snapshot's arrays as float32, checked against the shapes ``config`` implies."""
    d, dw, di, n = config.dim, config.dim_word, config.dim_image, config.n_words
    expected = {
        "Wemb": (n, dw), "encoder_W": (dw, 2 * d), "encoder_b": (2 * d,), "encoder_U": (d, 2 * d),
        "encoder_Wx": (dw, d), "encoder_bx": (d,), "encoder_Ux": (d, d), "ff_image_W": (di, d), "ff_image_b": (d,),
    }
    try:
        os.close(runs.open_regular(npz_path, "snapshot archive"))  # a FIFO or device is refused, not read
        archive = np.load(npz_path, allow_pickle=False)
    except runs.RunError as e:
        raise LegacySnapshotError(str(e)) from None
    except FileNotFoundError:
        raise LegacySnapshotError(f"{npz_path}: file not found") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise LegacySnapshotError(f"{npz_path}: not a readable .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise LegacySnapshotError(f"{npz_path}: a single array, not an .npz archive of named arrays")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        missing = [k for k in ARRAYS if k not in archive.files]
        if missing:
            raise LegacySnapshotError(
                f"{npz_path}: missing array(s) {', '.join(missing)} (has {', '.join(sorted(archive.files)) or 'none'})"
            )
        for name in ARRAYS:
            try:
                a = archive[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise LegacySnapshotError(f"{npz_path}: array {name} is unreadable ({e})") from None
            if a.dtype.kind != "f":
                raise LegacySnapshotError(f"{npz_path}: array {name} has dtype {a.dtype}, expected floating point")
            if a.shape != expected[name]:
                raise LegacySnapshotError(
                    f"{npz_path}: {name} has shape {a.shape} but the options in {pkl_path.name} "
                    f"(n_words={n}, dim_word={dw}, dim={d}, dim_image={di}) need {expected[name]}; "
                    "are the .pkl and .npz from the same model?"
                )
            if not np.isfinite(a).all():
                raise LegacySnapshotError(f"{npz_path}: array {name} holds NaN or infinite values; refusing it")
            arrays[name] = a.astype(np.float32, copy=False)
    return arrays


def _word_text(key: Any, pkl_path: Path) -> tuple[int, str] | None:
    """``(priority, text)`` of a worddict key: 0 for UTF-8 bytes, 1 for unicode; ``None`` for other bytes."""
    if isinstance(key, bytes):
        try:
            return 0, key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(key, str):
        return 1, key
    raise LegacySnapshotError(f"{pkl_path}: worddict key {key!r} is not a string")


def vocabulary_rows(worddict: dict[Any, Any], n_words: int, pkl_path: Path) -> tuple[list[str], list[int]]:
    """``(words, rows)``: the words of the new vocabulary (id ``k + 2``) and, per new id, its row of ``Wemb``.

    ``rows`` starts with ``[0, 1]`` (end-of-sentence, unknown); see the module text for the rules.
    """
    entries: list[tuple[int, str, int]] = []
    for key, idx in worddict.items():
        try:
            idx = integer(idx, f"worddict value of {key!r}", 0, allow_text=False)
        except OptionError as e:
            raise LegacySnapshotError(f"{pkl_path}: {e}") from None
        decoded = _word_text(key, pkl_path)
        if decoded is None or idx == UNK or idx >= n_words or decoded[1].split() != [decoded[1]]:
            continue  # no caption reaches this entry, or the original encodes it as unknown
        entries.append((*decoded, idx))
    chosen: dict[str, int] = {}
    for _, text, idx in sorted(entries, key=lambda e: (e[0], e[2])):
        chosen.setdefault(text, idx)
    words = sorted(chosen, key=lambda w: (chosen[w], w))
    return words, [EOS, UNK] + [chosen[w] for w in words]


def load_legacy(prefix: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor], Vocabulary, dict[str, Any]]:
    """``(config, state_dict, vocabulary, options)`` of an original snapshot pair ``PREFIX.pkl`` + ``PREFIX.npz``.

    The state dict loads into :class:`~order_embedding.model.OrderEmbeddingModel` ``(config)``
    and computes the original's sentence and image vectors; ``options`` are the
    original's options with text decoded. Problems raise :class:`LegacySnapshotError`.
    """
    pkl_path, npz_path = snapshot_paths(prefix)
    has_pkl, has_npz = pkl_path.is_file(), npz_path.is_file()
    if not (has_pkl and has_npz):
        if has_pkl or has_npz:
            found, lacking = (pkl_path, npz_path) if has_pkl else (npz_path, pkl_path)
            raise LegacySnapshotError(f"incomplete snapshot: found {found} but not {lacking} (a snapshot is a .pkl + .npz pair)")
        raise LegacySnapshotError(f"no snapshot at {prefix}: neither {pkl_path} nor {npz_path} exists")
    options, worddict = read_options(pkl_path)
    full = _model_config(options, pkl_path)
    arrays = read_arrays(npz_path, full, pkl_path)
    words, rows = vocabulary_rows(worddict, full.n_words, pkl_path)
    dense = rows == list(range(full.n_words))
    config = ModelConfig(**{**full.to_dict(), "n_words": len(rows)})

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    W, U, d = arrays["encoder_W"], arrays["encoder_U"], full.dim
    state = {
        "text.embedding.weight": t(arrays["Wemb"] if dense else arrays["Wemb"][rows]),
        # nn.GRU stacks the gates r, z, n as rows: the original's reset, update, candidate columns, transposed.
        "text.gru.weight_ih_l0": t(np.concatenate([W, arrays["encoder_Wx"]], axis=1).T),
        "text.gru.weight_hh_l0": t(np.concatenate([U, arrays["encoder_Ux"]], axis=1).T),
        "text.gru.bias_ih_l0": t(np.concatenate([arrays["encoder_b"], arrays["encoder_bx"]])),
        "text.gru.bias_hh_l0": torch.zeros(3 * d),
        "image.fc.weight": t(arrays["ff_image_W"].T),
        "image.fc.bias": t(arrays["ff_image_b"]),
    }
    vocab = Vocabulary(words, n_words=len(rows), lowercase=False)
    return config, state, vocab, options


def convert_legacy(prefix: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the snapshot pair ``PREFIX.pkl`` + ``PREFIX.npz`` as a run folder ``out_dir`` (which must be new or empty)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LegacySnapshotError(f"{out}: exists and is not an empty folder; choose a new output folder")
    config, state, vocab, options = load_legacy(prefix)
    train: dict[str, Any] = {
        k: options[k] for k in ("margin", "data", "cnn") if isinstance(options.get(k), (str, int, float))
    }
    train["source"] = f"legacy snapshot {prefix}"
    out.mkdir(parents=True, exist_ok=True)
    vocab.save(out / runs.VOCAB)
    runs.save_tensors(out / runs.BEST, state, {"source": train["source"]})
    runs.save_json(out / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": train})
    return out
