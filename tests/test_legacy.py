"""Original snapshot pairs (PREFIX.pkl + PREFIX.npz): safe reading, conversion, and the original's vectors."""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import struct
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from order_embedding import inference as api
from order_embedding import legacy, runs
from order_embedding.batching import pad_batch
from order_embedding.cli import main
from order_embedding.legacy import LegacySnapshotError, UnsafePickleError
from order_embedding.model import OrderEmbeddingModel

# --------------------------------------------------------------------------------------------
# Pickles as Python 2 writes them
# --------------------------------------------------------------------------------------------

#: Written by CPython 2.7's ``cPickle.dumps(d, protocol)`` for
#: d = {'options': {'n_words': 4, 'dim': 3, 'abs': True, 'margin': 0.05, 'method': 'order',
#:      'load_from': None, 'big': 2**40, 'neg': -7, 'shape': (1, 2)},
#:      'worddict': OrderedDict([('a', 2), ('caf\xc3\xa9', 3), (u'ni\xf1o', 4)])}
PY2_PROTOCOL0 = (
    b"(dp1\nS'worddict'\np2\nccollections\nOrderedDict\np3\n((lp4\n(lp5\nS'a'\naI2\naa(lp6\nS'caf\\xc3\\xa9'"
    b"\np7\naI3\naa(lp8\nVni\xf1o\np9\naI4\naatRp10\nsS'options'\np11\n(dp12\nS'shape'\np13\n(I1\nI2\ntp14\nsS'dim'"
    b"\np15\nI3\nsS'load_from'\np16\nNsS'abs'\np17\nI01\nsS'n_words'\np18\nI4\nsS'big'\np19\nI1099511627776\nsS'margin'"
    b"\np20\nF0.050000000000000003\nsS'method'\np21\nS'order'\np22\nsS'neg'\np23\nI-7\nss."
)
PY2_PROTOCOL2 = (
    b"\x80\x02}q\x01(U\x08worddictq\x02ccollections\nOrderedDict\nq\x03]q\x04(]q\x05(U\x01aK\x02e]q\x06(U\x05caf"
    b"\xc3\xa9q\x07K\x03e]q\x08(X\x05\x00\x00\x00ni\xc3\xb1oq\tK\x04ee\x85Rq\nU\x07optionsq\x0b}q\x0c(U\x05shapeq\r"
    b"K\x01K\x02\x86q\x0eU\x03dimq\x0fK\x03U\tload_fromq\x10NU\x03absq\x11\x88U\x07n_wordsq\x12K\x04U\x03bigq\x13"
    b"I1099511627776\nU\x06marginq\x14G?\xa9\x99\x99\x99\x99\x99\x9aU\x06methodq\x15U\x05orderq\x16U\x03negq\x17"
    b"J\xf9\xff\xff\xffuu."
)


def py2_pickle(obj: Any, protocol: int = 2) -> bytes:
    """Opcodes as CPython 2.7's cPickle writes them: ``bytes`` are Python 2 ``str``, ``str`` is ``unicode``.

    (Python 3's own pickler writes ``bytes`` and ``OrderedDict`` differently, so the bytes are built here.)
    """
    out = bytearray(b"\x80\x02" if protocol == 2 else b"")
    memo = [0]

    def put() -> None:
        memo[0] += 1
        n = memo[0]
        out.extend((b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n)) if protocol == 2 else b"p%d\n" % n)

    def emit(x: Any) -> None:
        if x is None:
            out.extend(b"N")
        elif isinstance(x, bool):
            out.extend((b"\x88" if x else b"\x89") if protocol == 2 else (b"I01\n" if x else b"I00\n"))
        elif isinstance(x, int):
            if protocol == 2 and 0 <= x < 256:
                out.extend(b"K" + bytes([x]))
            elif protocol == 2 and 0 <= x < 65536:
                out.extend(b"M" + struct.pack("<H", x))
            elif protocol == 2 and -(2**31) <= x < 2**31:
                out.extend(b"J" + struct.pack("<i", x))
            else:
                out.extend(b"I%d\n" % x)
        elif isinstance(x, float):
            out.extend(b"G" + struct.pack(">d", x) if protocol == 2 else b"F%s\n" % repr(x).encode())
        elif isinstance(x, bytes):
            if protocol == 2:
                out.extend(b"U" + bytes([len(x)]) + x if len(x) < 256 else b"T" + struct.pack("<I", len(x)) + x)
            else:
                out.extend(b"S" + repr(x)[1:].encode() + b"\n")
            put()
        elif isinstance(x, str):
            if protocol == 2:
                data = x.encode("utf-8")
                out.extend(b"X" + struct.pack("<I", len(data)) + data)
            else:
                out.extend(b"V" + x.encode("raw_unicode_escape") + b"\n")
            put()
        elif isinstance(x, OrderedDict):  # py2: (OrderedDict, ([[k, v], ...],)) through REDUCE
            out.extend(b"ccollections\nOrderedDict\n")
            put()
            if protocol == 0:
                out.extend(b"(")
            emit([[k, v] for k, v in x.items()])
            out.extend(b"\x85R" if protocol == 2 else b"tR")
            put()
        elif isinstance(x, dict):
            out.extend(b"}" if protocol == 2 else b"(d")
            put()
            if protocol == 2 and x:
                out.extend(b"(")
            for k, v in x.items():
                emit(k)
                emit(v)
                if protocol == 0:
                    out.extend(b"s")
            if protocol == 2 and x:
                out.extend(b"u")
        elif isinstance(x, list):
            out.extend(b"]" if protocol == 2 else b"(l")
            put()
            if protocol == 2 and x:
                out.extend(b"(")
            for v in x:
                emit(v)
                if protocol == 0:
                    out.extend(b"a")
            if protocol == 2 and x:
                out.extend(b"e")
        elif isinstance(x, tuple):
            if protocol == 2 and 1 <= len(x) <= 3:
                for v in x:
                    emit(v)
                out.extend(b"\x85\x86\x87"[len(x) - 1 : len(x)])
            else:
                out.extend(b"(")
                for v in x:
                    emit(v)
                out.extend(b"t")
            put()
        else:
            raise TypeError(f"py2_pickle: unsupported {type(x).__name__}")

    emit(obj)
    out.extend(b".")
    return bytes(out)


def test_real_python2_pickles_decode_as_plain_data() -> None:
    expected_options = {"n_words": 4, "dim": 3, "abs": True, "margin": 0.05, "method": "order",
                        "load_from": None, "big": 2**40, "neg": -7, "shape": (1, 2)}
    for data in (PY2_PROTOCOL0, PY2_PROTOCOL2):
        obj = legacy.safe_loads(data, "fixture")
        assert obj["options"] == expected_options
        assert type(obj["worddict"]) is OrderedDict
        # Python 2 str is decoded as latin-1 (lossless); unicode stays unicode.
        assert list(obj["worddict"].items()) == [("a", 2), (b"caf\xc3\xa9".decode("latin-1"), 3), ("ni\xf1o", 4)]
        raw = legacy.safe_loads(data, "fixture", encoding="bytes")
        assert list(raw[b"worddict"]) == [b"a", b"caf\xc3\xa9", "ni\xf1o"]


@pytest.mark.parametrize("protocol", [0, 2])
def test_py2_pickle_helper_round_trips(protocol: int) -> None:
    obj = {b"options": {b"dim": 3, b"margin": 0.2, b"abs": False, b"big": 2**40, b"neg": -70000, b"t": (1, b"x"),
                        b"t4": (1, 2, 3, 4), b"none": None, b"l": [], b"u": "\xe9t\xe9"},
           b"worddict": OrderedDict([(b"a", 2), (b"caf\xc3\xa9", 3), ("ni\xf1o", 4)])}
    back = legacy.safe_loads(py2_pickle(obj, protocol), "helper", encoding="bytes")
    assert back == obj and type(back[b"worddict"]) is OrderedDict


# --------------------------------------------------------------------------------------------
# Snapshots and an independent NumPy forward pass of the original
# --------------------------------------------------------------------------------------------

DIMS = {"n_words": 9, "dim_word": 5, "dim": 6, "dim_image": 7}

#: The vocabulary the original builds: byte strings from UTF-8 files, ids 2.. by frequency;
#: b"rare" is beyond n_words (9) and so unknown.
DENSE = OrderedDict([(b"a", 2), (b"dog", 3), (b"on", 4), (b"the", 5), (b"caf\xc3\xa9", 6), (b"grass", 7),
                     (b"runs", 8), (b"rare", 9)])
#: Everything a worddict could do: unused ids (3, 4), a shared id (5), the end-of-sentence id 0, id 1,
#: words no split yields, a word that is not UTF-8, an ASCII unicode word, and a unicode word that
#: gives the same text as a byte-string word.
IRREGULAR = OrderedDict([(b"a", 2), (b"dog", 5), (b"hound", 5), (b"on", 0), (b"the", 1), (b"", 6),
                         (b"two words", 7), (b"caf\xe9", 6), ("grass", 8), ("ni\xf1o", 2), (b"ni\xc3\xb1o", 7),
                         (b"runs", 9)])
#: A worddict of Python 2 unicode words (built from decoded text); its users passed unicode captions.
UNICODE = OrderedDict([("a", 2), ("caf\xe9", 3), ("ni\xf1o", 4), ("dog", 5), ("the", 6), ("on", 7), ("grass", 8)])

CAPTIONS = [
    "a dog runs on the grass",
    "the café",
    "niño  and\ta hound",
    "",
    "dog",
    "rare words are unknown words",
    "a a a a a a a a a a a a",
    "two words on the grass",
    "café café niño the",
]


def py2_options(method: str, /, **changes: Any) -> dict[bytes, Any]:
    """Options as the original driver saved them (Python 2 str keys and values)."""
    opts = {b"n_words": DIMS["n_words"], b"dim_word": DIMS["dim_word"], b"dim": DIMS["dim"],
            b"dim_image": DIMS["dim_image"], b"method": method.encode(), b"abs": method == "order",
            b"margin": 0.05 if method == "order" else 0.2, b"encoder": b"gru", b"data": b"coco", b"cnn": b"10crop",
            b"max_epochs": 15, b"dispFreq": 10, b"grad_clip": 2.0, b"optimizer": b"adam", b"batch_size": 128,
            b"lrate": 0.001, b"validFreq": 300, b"name": method.encode(), b"save_dir": b"snapshots",
            b"load_from": None}
    for k, v in changes.items():
        if v is None:
            opts.pop(k.encode(), None)
        else:
            opts[k.encode()] = v
    return opts


def random_arrays(rng: np.random.Generator, n_words: int, dim_word: int, dim: int, dim_image: int) -> dict[str, np.ndarray]:
    def r(*shape: int, scale: float = 0.6) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return {"Wemb": r(n_words, dim_word), "encoder_W": r(dim_word, 2 * dim), "encoder_b": r(2 * dim, scale=0.2),
            "encoder_U": r(dim, 2 * dim), "encoder_Wx": r(dim_word, dim), "encoder_bx": r(dim, scale=0.2),
            "encoder_Ux": r(dim, dim), "ff_image_W": r(dim_image, dim), "ff_image_b": r(dim, scale=0.2)}


def write_snapshot(folder: Path, name: str, options: dict, worddict: Any, arrays: dict[str, np.ndarray],
                   protocol: int = 2) -> Path:
    prefix = folder / name
    (folder / f"{name}.pkl").write_bytes(py2_pickle({b"options": options, b"worddict": worddict}, protocol))
    np.savez(folder / f"{name}.npz", **arrays)
    return prefix


def py2_lookup(worddict: dict, token: bytes | str) -> int | None:
    """Python 2 dict lookup: str and unicode keys are equal when ASCII and the same text."""
    if token in worddict:
        return worddict[token]
    other = token.decode("ascii") if isinstance(token, bytes) and token.isascii() else (
        token.encode("ascii") if isinstance(token, str) and token.isascii() else None)
    return worddict.get(other) if other is not None else None


def reference_sentences(options: dict, worddict: dict, arrays: dict[str, np.ndarray], captions: list[str],
                        as_bytes: bool = True) -> np.ndarray:
    """The original's sentence vectors, in float64: tokens, one end-of-sentence step, masked GRU, l2norm, abs."""
    n_words, dim, use_abs = options[b"n_words"], options[b"dim"], options[b"abs"]
    seqs = []
    for caption in captions:
        tokens = caption.encode("utf-8").split() if as_bytes else caption.split()
        ids = [py2_lookup(worddict, w) for w in tokens]
        seqs.append([i if i is not None and i < n_words else 1 for i in ids])
    steps = max(len(s) for s in seqs) + 1
    x = np.zeros((steps, len(seqs)), np.int64)  # time-major, as the original
    mask = np.zeros((steps, len(seqs)))
    for j, s in enumerate(seqs):
        x[: len(s), j] = s
        mask[: len(s) + 1, j] = 1.0
    a = {k: v.astype(np.float64) for k, v in arrays.items()}
    emb = a["Wemb"][x]
    h = np.zeros((len(seqs), dim))
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    for t in range(steps):
        preact = emb[t] @ a["encoder_W"] + a["encoder_b"] + h @ a["encoder_U"]
        r, u = sigmoid(preact[:, :dim]), sigmoid(preact[:, dim:])
        c = np.tanh(emb[t] @ a["encoder_Wx"] + a["encoder_bx"] + r * (h @ a["encoder_Ux"]))
        h_new = u * h + (1.0 - u) * c
        h = mask[t][:, None] * h_new + (1.0 - mask[t])[:, None] * h
    s = h / np.linalg.norm(h, axis=1, keepdims=True)
    return np.abs(s) if use_abs else s


def reference_images(options: dict, arrays: dict[str, np.ndarray], feats: np.ndarray) -> np.ndarray:
    im = feats.astype(np.float64) @ arrays["ff_image_W"].astype(np.float64) + arrays["ff_image_b"]
    im = im / np.linalg.norm(im, axis=1, keepdims=True)
    return np.abs(im) if options[b"abs"] else im


def image_features(rng: np.random.Generator, n: int, dim_image: int) -> np.ndarray:
    f = rng.standard_normal((n, dim_image)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def encode_with_model(config, state, vocab, captions, feats, skip_init: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of the converted model; ``skip_init`` builds it without random initialisation (fast at full size)."""
    if skip_init:
        with torch.device("meta"):
            net = OrderEmbeddingModel(config)
        net.load_state_dict(state, assign=True)
    else:
        net = OrderEmbeddingModel(config)
        net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        tokens, lengths = pad_batch([vocab.encode(c) for c in captions])
        s = net.encode_text(tokens, lengths).numpy()
        im = net.encode_image(torch.from_numpy(feats)).numpy()
    return s, im


CASES = [("order", DENSE, True), ("cosine", DENSE, True), ("order", IRREGULAR, True),
         ("cosine", IRREGULAR, True), ("order", UNICODE, False), ("cosine", UNICODE, False)]


@pytest.mark.parametrize("protocol", [0, 2])
@pytest.mark.parametrize("method,worddict,as_bytes", CASES)
def test_converted_model_gives_the_original_vectors(tmp_path: Path, method: str, worddict: dict, as_bytes: bool,
                                                    protocol: int) -> None:
    rng = np.random.default_rng(len(worddict) + protocol)
    options = py2_options(method)
    arrays = random_arrays(rng, **DIMS)
    prefix = write_snapshot(tmp_path, method, options, worddict, arrays, protocol)
    feats = image_features(rng, 5, DIMS["dim_image"])

    config, state, vocab, opts = legacy.load_legacy(prefix)
    assert (config.method, config.abs, config.encoder) == (method, method == "order", "gru")
    assert opts["data"] == "coco" and opts["margin"] == options[b"margin"]
    s, im = encode_with_model(config, state, vocab, CAPTIONS, feats)
    ref_s = reference_sentences(options, worddict, arrays, CAPTIONS, as_bytes)
    ref_im = reference_images(options, arrays, feats)
    assert np.abs(s - ref_s).max() <= 1e-5
    assert np.abs(im - ref_im).max() <= 1e-5
    # The captions differ, so equal vectors would hide a lookup that ignores the words.
    assert np.abs(ref_s[0] - ref_s[4]).max() > 1e-3


def test_dense_worddict_keeps_ids_and_table(tmp_path: Path) -> None:
    arrays = random_arrays(np.random.default_rng(1), **DIMS)
    config, state, vocab, _ = legacy.load_legacy(write_snapshot(tmp_path, "order", py2_options("order"), DENSE, arrays))
    assert config.n_words == DIMS["n_words"] == vocab.size
    for word, idx in DENSE.items():
        assert vocab.index(word.decode("utf-8")) == (idx if idx < DIMS["n_words"] else 1)
    assert torch.equal(state["text.embedding.weight"], torch.from_numpy(arrays["Wemb"]))
    assert torch.equal(state["text.gru.bias_hh_l0"], torch.zeros(3 * DIMS["dim"]))


def test_irregular_worddict_rows(tmp_path: Path) -> None:
    arrays = random_arrays(np.random.default_rng(2), **DIMS)
    _, state, vocab, _ = legacy.load_legacy(write_snapshot(tmp_path, "m", py2_options("order"), IRREGULAR, arrays))
    table = state["text.embedding.weight"].numpy()
    # Each surviving word reaches its original row; the byte-string "niño" (id 7) wins over the unicode one (id 2).
    expected_rows = {"a": 2, "dog": 5, "hound": 5, "on": 0, "grass": 8, "ni\xf1o": 7}
    assert sorted(vocab.words) == sorted(expected_rows)
    for word, row in expected_rows.items():
        np.testing.assert_array_equal(table[vocab.index(word)], arrays["Wemb"][row])
    # Dropped: id 1, id >= n_words, the empty word, a word with a space, and non-UTF-8 bytes.
    for word in ("the", "runs", "two", "caf\xe9"):
        assert vocab.index(word) == 1
    np.testing.assert_array_equal(table[:2], arrays["Wemb"][:2])


def test_paper_dimensions(tmp_path: Path) -> None:
    """The published models' sizes (dim 1024, dim_word 300, VGG 4096), with a smaller word table."""
    rng = np.random.default_rng(3)
    dims = {"n_words": 400, "dim_word": 300, "dim": 1024, "dim_image": 4096}
    words = [f"w{k}".encode() for k in range(2, 420)]
    worddict = OrderedDict((w, k + 2) for k, w in enumerate(words))
    arrays = random_arrays(rng, **dims)
    arrays["encoder_U"] *= 0.05  # recurrent weights of a trained-looking size
    arrays["encoder_Ux"] *= 0.05
    arrays["Wemb"] *= 0.2
    options = py2_options("order", **dims)
    prefix = write_snapshot(tmp_path, "order", options, worddict, arrays)
    captions = [" ".join(f"w{k}" for k in rng.integers(2, 430, size=rng.integers(0, 20))) for _ in range(24)]
    feats = image_features(rng, 20, dims["dim_image"])
    config, state, vocab, _ = legacy.load_legacy(prefix)
    s, im = encode_with_model(config, state, vocab, captions, feats, skip_init=True)
    assert np.abs(s - reference_sentences(options, worddict, arrays, captions)).max() <= 1e-5
    assert np.abs(im - reference_images(options, arrays, feats)).max() <= 1e-5


# --------------------------------------------------------------------------------------------
# Through the public API, the run folder and the command line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["order", "cosine"])
def test_api_load_model_from_prefix(tmp_path: Path, method: str) -> None:
    rng = np.random.default_rng(4)
    options = py2_options(method)
    arrays = random_arrays(rng, **DIMS)
    (tmp_path / "snapshots").mkdir()
    prefix = write_snapshot(tmp_path / "snapshots", method, options, IRREGULAR, arrays)
    feats = image_features(rng, 6, DIMS["dim_image"])
    ref_s = reference_sentences(options, IRREGULAR, arrays, CAPTIONS)
    ref_im = reference_images(options, arrays, feats)
    for path in (prefix, str(prefix), f"{prefix}.pkl", f"{prefix}.npz"):
        model = api.load_model(path, device="cpu")
        assert model.config.method == method and model.options["margin"] == options[b"margin"]
        assert np.abs(api.encode_sentences(model, CAPTIONS, batch_size=4) - ref_s).max() <= 1e-5
        assert np.abs(api.encode_images(model, feats, batch_size=4) - ref_im).max() <= 1e-5


def test_convert_legacy_cli_writes_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(5)
    options = py2_options("order")
    arrays = random_arrays(rng, **DIMS)
    prefix = write_snapshot(tmp_path, "order", options, DENSE, arrays)
    out = tmp_path / "runs" / "order"
    assert main(["convert-legacy", str(prefix), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    cfg = json.loads((out / runs.CONFIG).read_text())
    assert cfg["kind"] == "caption-image"
    assert cfg["model"]["method"] == "order" and cfg["model"]["abs"] is True and cfg["model"]["n_words"] == 9
    assert cfg["train"] == {"margin": 0.05, "data": "coco", "cnn": "10crop", "source": f"legacy snapshot {prefix}"}
    assert json.loads((out / runs.VOCAB).read_text())["words"] == [w.decode() for w in DENSE][:7]

    model = api.load_model(out, device="cpu")
    feats = image_features(rng, 4, DIMS["dim_image"])
    assert np.abs(api.encode_sentences(model, CAPTIONS) - reference_sentences(options, DENSE, arrays, CAPTIONS)).max() <= 1e-5
    assert np.abs(api.encode_images(model, feats) - reference_images(options, arrays, feats)).max() <= 1e-5

    # A second conversion into the same folder is refused with one line.
    assert main(["convert-legacy", str(prefix), str(out)]) == 2
    err = capsys.readouterr().err
    assert "not an empty folder" in err and err.count("\n") == 1
    assert main(["convert-legacy", str(tmp_path / "missing"), str(tmp_path / "new")]) == 2
    assert "no snapshot" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_is_legacy_prefix(tmp_path: Path) -> None:
    prefix = write_snapshot(tmp_path, "order", py2_options("order"), DENSE,
                            random_arrays(np.random.default_rng(6), **DIMS))
    for path in (prefix, f"{prefix}.pkl", f"{prefix}.npz"):
        assert legacy.is_legacy_prefix(path)
    (tmp_path / "run").mkdir()
    (tmp_path / "half.npz").write_bytes(b"")
    assert not legacy.is_legacy_prefix(tmp_path / "run")
    assert not legacy.is_legacy_prefix(tmp_path / "nothing")
    assert legacy.is_legacy_prefix(tmp_path / "half")  # so that loading reports the missing .pkl


# --------------------------------------------------------------------------------------------
# Refusing code in pickles
# --------------------------------------------------------------------------------------------


class _Reduce:
    """Pickles as a call of ``func(*args)``; pickling does not call it."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def malicious_payloads(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    return {
        "os.system protocol 0 by hand": b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.",
        "posix.system protocol 2": pickle.dumps(_Reduce(os.system, cmd), protocol=2),
        "os.system protocol 4 (STACK_GLOBAL)": pickle.dumps(_Reduce(os.system, cmd), protocol=4),
        "python 2 __builtin__.eval": b"c__builtin__\neval\n(S'__import__(\"os\").system(\"" + cmd.encode() + b"\")'\ntR.",
        "builtins.exec": pickle.dumps(_Reduce(exec, f"import os; os.system({cmd!r})"), protocol=2),
        "a class instance": pickle.dumps(Fraction(1, 3), protocol=2),
        "a function": pickle.dumps(len, protocol=2),
        "a harmless-looking class": pickle.dumps(_Reduce(__import__("collections").Counter, "ab"), protocol=2),
        "inside the worddict": py2_pickle({b"options": {}, b"worddict": OrderedDict([(b"a", 2)])}).replace(
            b"K\x02e", b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntRe"),
    }


def test_malicious_pickles_are_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for label, payload in malicious_payloads(marker).items():
        ops = {op.name for op, _, _ in pickletools.genops(payload)}
        assert ops & {"GLOBAL", "STACK_GLOBAL"}, label  # a well-formed pickle that names a global
        with pytest.raises(UnsafePickleError, match="refusing to load the pickle: it references"):
            legacy.safe_loads(payload, label)
    assert not marker.exists()


def test_other_non_plain_pickles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePickleError, match="persistent id"):
        legacy.safe_loads(b"\x80\x02U\x01xQ.", "persid")
    with pytest.raises(UnsafePickleError, match="bytearray"):
        legacy.safe_loads(pickle.dumps(bytearray(b"xy"), protocol=5), "bytearray")
    with pytest.raises(UnsafePickleError, match=r"an OrderedDict carries attributes \['x'\]"):
        legacy.safe_loads(b"\x80\x02ccollections\nOrderedDict\n)R}U\x01xK\x01sb.", "build")  # BUILD sets od.x
    with pytest.raises(LegacySnapshotError, match="not a readable pickle"):
        legacy.safe_loads(PY2_PROTOCOL2[:60], "truncated")


def test_malicious_snapshot_is_refused_by_load_legacy(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    prefix = write_snapshot(tmp_path, "order", py2_options("order"), DENSE,
                            random_arrays(np.random.default_rng(7), **DIMS))
    (tmp_path / "order.pkl").write_bytes(malicious_payloads(marker)["inside the worddict"])
    with pytest.raises(UnsafePickleError, match=r"order\.pkl: refusing .* os\.system"):
        legacy.load_legacy(prefix)
    with pytest.raises(UnsafePickleError):
        api.load_model(prefix, device="cpu")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Clear errors for broken or unsupported snapshots
# --------------------------------------------------------------------------------------------


def _expect_error(prefix: Path, pattern: str) -> None:
    with pytest.raises(LegacySnapshotError, match=pattern):
        legacy.load_legacy(prefix)


def test_missing_or_mismatched_halves(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    prefix = write_snapshot(tmp_path, "order", py2_options("order"), DENSE, random_arrays(rng, **DIMS))
    (tmp_path / "order.npz").rename(tmp_path / "kept.npz")
    _expect_error(prefix, r"incomplete snapshot: found .*order\.pkl but not .*order\.npz")
    (tmp_path / "kept.npz").rename(tmp_path / "order.npz")
    (tmp_path / "order.pkl").unlink()
    _expect_error(prefix, r"incomplete snapshot: found .*order\.npz but not .*order\.pkl")
    _expect_error(tmp_path / "none", "no snapshot at")

    # The .pkl of one model with the .npz of another (other sizes).
    write_snapshot(tmp_path, "order", py2_options("order"), DENSE, random_arrays(rng, **DIMS))
    other = random_arrays(rng, **{**DIMS, "dim": 4})
    np.savez(tmp_path / "order.npz", **other)
    _expect_error(prefix, r"order\.npz: encoder_W has shape \(5, 8\) but the options in order\.pkl .* need \(5, 12\); "
                          r"are the \.pkl and \.npz from the same model\?")
    np.savez(tmp_path / "order.npz", **random_arrays(rng, **{**DIMS, "n_words": 20}))
    _expect_error(prefix, r"Wemb has shape \(20, 5\) .* need \(9, 5\)")


def test_bad_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    arrays = random_arrays(rng, **DIMS)
    prefix = write_snapshot(tmp_path, "m", py2_options("order"), DENSE, arrays)
    np.savez(tmp_path / "m.npz", **{k: v for k, v in arrays.items() if k not in ("encoder_Ux", "ff_image_b")})
    _expect_error(prefix, "missing array.s. encoder_Ux, ff_image_b")
    np.savez(tmp_path / "m.npz", **{**arrays, "Wemb": np.zeros((9, 5), np.int32)})
    _expect_error(prefix, "Wemb has dtype int32, expected floating point")
    np.savez(tmp_path / "m.npz", **{**arrays, "Wemb": np.array([{"x": 1}] * 9, dtype=object)})
    _expect_error(prefix, "array Wemb is unreadable")
    (tmp_path / "m.npz").write_bytes(b"not a zip file at all")
    _expect_error(prefix, r"m\.npz: not a readable \.npz archive")
    np.save(tmp_path / "single.npy", arrays["Wemb"])
    (tmp_path / "single.npy").replace(tmp_path / "m.npz")
    _expect_error(prefix, "a single array, not an .npz archive")


@pytest.mark.parametrize("change,pattern", [
    ({"encoder": b"bow"}, "encoder 'bow' is not supported .only 'gru'."),
    ({"encoder": b"lstm"}, "encoder 'lstm' is not supported"),
    ({"method": b"euclidean"}, "method 'euclidean' is not supported"),
    ({"dim": None}, "options lack dim"),
    ({"abs": None, "encoder": None}, "options lack abs, encoder"),
    ({"dim": 0}, "option dim must be a whole number at least 1, got 0"),
    ({"n_words": 7.5}, "option n_words must be a whole number, got 7.5"),
    ({"abs": b"yes"}, "option abs must be true or false"),
])
def test_unsupported_or_bad_options(tmp_path: Path, change: dict, pattern: str) -> None:
    arrays = random_arrays(np.random.default_rng(10), **DIMS)
    _expect_error(write_snapshot(tmp_path, "m", py2_options("order", **change), DENSE, arrays), pattern)


def test_bad_pickle_contents(tmp_path: Path) -> None:
    arrays = random_arrays(np.random.default_rng(11), **DIMS)
    prefix = write_snapshot(tmp_path, "m", py2_options("order"), DENSE, arrays)
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(py2_pickle({b"options": py2_options("order")}))
    _expect_error(prefix, "no 'worddict' in the pickled dict")
    pkl.write_bytes(py2_pickle([1, 2]))
    _expect_error(prefix, "expected a pickled dict with 'options' and 'worddict', got a list")
    pkl.write_bytes(py2_pickle({b"options": py2_options("order"), b"worddict": OrderedDict([(b"a", b"2")])}))
    _expect_error(prefix, r"worddict value of b'a' must be a whole number, got b'2'")
    pkl.write_bytes(py2_pickle({b"options": py2_options("order"), b"worddict": OrderedDict([(b"a", -1)])}))
    _expect_error(prefix, "worddict value of b'a' must be a whole number at least 0, got -1")
    pkl.write_bytes(py2_pickle({b"options": py2_options("order"), b"worddict": {3: 2}}))
    _expect_error(prefix, "worddict key 3 is not a string")
    pkl.write_bytes(PY2_PROTOCOL0[:-5])
    _expect_error(prefix, r"m\.pkl: not a readable pickle")
