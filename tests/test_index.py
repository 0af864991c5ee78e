"""Index build and search against brute-force NumPy re-derivations."""
import json

import numpy as np
import pytest
import torch
from helpers import needs, order_penalty, stable_topk

from order_embedding import runs
from order_embedding.cli import main
from order_embedding.data.npy import NpyFileError, NpyRows
from order_embedding.index import (
    EMBEDDINGS,
    META,
    Index,
    IndexFileError,
    build_ann,
    build_index,
)
from order_embedding.inference import (
    encode_captions_file,
    encode_images,
    encode_sentences,
    load_model,
)
from order_embedding.model import ModelConfig, OrderEmbeddingModel
from order_embedding.vocab import Vocabulary

WORDS = [f"w{i}" for i in range(12)]


def make_run(path, method="order"):
    torch.manual_seed(1)
    config = ModelConfig(n_words=len(WORDS) + 2, dim_word=6, dim=16, dim_image=12, method=method,
                         abs=method == "order")
    net = OrderEmbeddingModel(config)
    path.mkdir()
    Vocabulary(WORDS).save(path / runs.VOCAB)
    runs.save_json(path / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": {}})
    runs.save_tensors(path / runs.BEST, net.state_dict(), {})
    return path


def make_features(path, n=300, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 12)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(path, x)
    return x


def brute_force(s, im, method, k):
    s, im = s.astype(np.float64), im.astype(np.float64)
    return stable_topk(order_penalty(s, im) if method == "order" else -(s @ im.T), k)


QUERIES = ["w1 w2 w3", "w4", "w5 w6 w0 w9", "w11 w2", "w7 w7 w8"]


@pytest.mark.parametrize("method", ["order", "cosine"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_build_and_exact_search_match_brute_force(tmp_path, method, dtype):
    run = make_run(tmp_path / "run", method)
    feats = make_features(tmp_path / "f.npy")
    out = build_index(run, tmp_path / "f.npy", tmp_path / "idx", dtype=dtype)
    model = load_model(run, device="cpu")
    stored = np.load(out / EMBEDDINGS)
    assert stored.dtype == np.dtype(dtype) and stored.shape == (300, 16)
    np.testing.assert_allclose(stored.astype(np.float32), encode_images(model, feats), atol=1e-3 if dtype == "float16" else 1e-6)
    meta = json.loads((out / META).read_text())
    assert (meta["count"], meta["dim"], meta["dtype"], meta["method"]) == (300, 16, dtype, method)
    assert meta["run"] == str(run.resolve())

    index = Index(out)
    errors, idx = index.search(QUERIES, k=7)
    want_e, want_i = brute_force(encode_sentences(model, QUERIES), stored.astype(np.float32), method, 7)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(errors, want_e, rtol=1e-5, atol=1e-6)


def test_cosine_topk_across_blocks_keeps_global_best(tmp_path):
    from order_embedding.kernels import cosine_topk

    rng = np.random.default_rng(4)
    s, im = rng.standard_normal((9, 5)).astype(np.float32), rng.standard_normal((1000, 5)).astype(np.float32)
    e, i = cosine_topk(s, im, 12, block=64)
    want_e, want_i = brute_force(s, im, "cosine", 12)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(e, want_e, rtol=1e-5, atol=1e-5)
    # ties: equal rows everywhere, so the lower indices win, across and inside blocks
    im = np.repeat(rng.standard_normal((10, 5)).astype(np.float32), 30, axis=0)
    e, i = cosine_topk(s, im, 40, block=64)
    np.testing.assert_array_equal(i, brute_force(s, im, "cosine", 40)[1])
    for bad_k in (0, 2.5, "3"):  # a fractional k is refused, not truncated
        with pytest.raises(ValueError, match="k must be a whole number"):
            cosine_topk(s, im, bad_k)


def ann_index(tmp_path, n, **ann):
    """A float32 index of ``n`` images with a FAISS candidate index built with ``ann``."""
    make_features(tmp_path / "f.npy", n=n)
    out = build_index(make_run(tmp_path / "run"), tmp_path / "f.npy", tmp_path / "idx", dtype="float32")
    build_ann(out, **ann)
    return out, Index(out)


@needs("faiss", "faiss")
def test_approximate_search_reranks_faiss_candidates_exactly(tmp_path):
    out, index = ann_index(tmp_path, 400, kind="ivf", nlist=8)
    exact = index.search(QUERIES, k=5)
    # every list probed and every image a candidate: the re-ranking alone decides, so it is exact
    full = index.search(QUERIES, k=5, approximate=True, candidates=400, nprobe=8)
    np.testing.assert_array_equal(full[1], exact[1])
    np.testing.assert_allclose(full[0], exact[0], rtol=1e-5, atol=1e-6)
    # fewer candidates: results are a re-ranked subset, each error still the exact one of its image
    q = encode_sentences(index.model(), QUERIES)
    e, i = index.search_vectors(q, k=5, approximate=True, candidates=20, nprobe=2)
    stored = np.load(out / EMBEDDINGS)
    for row in range(len(QUERIES)):
        ok = i[row] >= 0
        direct = (np.maximum(0, q[row][None] - stored[i[row][ok]]) ** 2).sum(1)
        np.testing.assert_allclose(e[row][ok], direct, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(e[row][ok]) >= 0)


@needs("faiss", "faiss")
def test_hnsw_candidates(tmp_path):
    _, index = ann_index(tmp_path, 200, kind="hnsw", hnsw_m=8)
    exact = index.search(QUERIES, k=3)
    approx = index.search(QUERIES, k=3, approximate=True, candidates=200, nprobe=400)
    np.testing.assert_array_equal(approx[1], exact[1])


def test_npy_rows_reads_slices(tmp_path):
    x = np.arange(60, dtype=np.float16).reshape(12, 5)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy")
    assert rows.shape == (12, 5) and rows.dtype == np.float16
    np.testing.assert_array_equal(rows[3:8], x[3:8])
    np.testing.assert_array_equal(rows[10:40], x[10:])
    assert rows[5:5].shape == (0, 5)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(NpyFileError, match="bad.npy"):
        NpyRows(tmp_path / "bad.npy")
    np.save(tmp_path / "cut.npy", x)
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-10])
    with pytest.raises(NpyFileError, match="truncated"):
        NpyRows(tmp_path / "cut.npy")


def test_build_refuses_existing_and_mismatched_input(tmp_path):
    run = make_run(tmp_path / "run")
    make_features(tmp_path / "f.npy", n=20)
    out = build_index(run, tmp_path / "f.npy", tmp_path / "idx")
    with pytest.raises(ValueError, match="already exists"):
        build_index(run, tmp_path / "f.npy", out)
    np.save(tmp_path / "g.npy", np.ones((5, 7), np.float32))
    with pytest.raises(ValueError, match="12-d"):
        build_index(run, tmp_path / "g.npy", tmp_path / "idx2")
    assert not (tmp_path / "idx2").exists()
    make_features(tmp_path / "h.npy", n=33, seed=9)
    build_index(run, tmp_path / "h.npy", out, overwrite=True)
    assert len(Index(out)) == 33
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy", "g.npy", "h.npy", "idx", "run"]
    with pytest.raises(IndexFileError, match="not an index folder"):
        Index(tmp_path / "run")


def test_encode_captions_file_streams_in_chunks(tmp_path):
    model = load_model(make_run(tmp_path / "run"), device="cpu")
    lines = [" ".join(np.random.default_rng(i).choice(WORDS, size=1 + i % 6)) for i in range(23)]
    (tmp_path / "caps.txt").write_text("\n".join(lines))  # no final newline
    shape = encode_captions_file(model, tmp_path / "caps.txt", tmp_path / "out.npy", chunk=5)
    assert shape == (23, 16)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), encode_sentences(model, lines), atol=1e-6)
    (tmp_path / "bad.txt").write_text("w1\n\nw2\n")
    with pytest.raises(ValueError, match="line 2 is empty"):
        encode_captions_file(model, tmp_path / "bad.txt", tmp_path / "bad.npy")
    assert not (tmp_path / "bad.npy").exists()


def test_cli_build_and_search(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    make_features(tmp_path / "f.npy", n=50)
    assert main(["index", "build", str(run), str(tmp_path / "f.npy"), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "idx"), "w1 w2", "w3", "-k", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    errors, idx = Index(tmp_path / "idx").search(["w1 w2", "w3"], k=4)
    assert [r["query"] for r in got] == ["w1 w2", "w3"]
    assert [[h["image"] for h in r["results"]] for r in got] == idx.tolist()
    assert main(["index", "search", str(tmp_path / "idx"), "w1", "-k", "0"]) == 2
    assert "argument -k: must be a whole number at least 1" in capsys.readouterr().err
    assert main(["index", "build", str(run), str(tmp_path / "f.npy"), "--out", str(tmp_path / "idx")]) == 2
    assert "already exists" in capsys.readouterr().err


def make_pixel_run(path, size=16):
    torch.manual_seed(2)
    config = ModelConfig(n_words=len(WORDS) + 2, dim_word=6, dim=8, dim_image=8, backbone="small_cnn",
                         backbone_options={"image_size": size, "width": 4})
    path.mkdir()
    Vocabulary(WORDS).save(path / runs.VOCAB)
    runs.save_json(path / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": {}})
    runs.save_tensors(path / runs.BEST, OrderEmbeddingModel(config).state_dict(), {})
    return path


def test_index_of_image_files_for_a_pixel_model(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(4)
    (tmp_path / "pics").mkdir()
    names = []
    for i in range(7):
        names.append(f"pics/{i}.png")
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(tmp_path / names[-1])
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    run = make_pixel_run(tmp_path / "run")
    assert main(["index", "build", str(run), "--images", str(tmp_path / "list.txt"), "--out", str(tmp_path / "idx"),
                 "--dtype", "float32"]) == 0
    index = Index(tmp_path / "idx")
    pixels = np.stack([np.asarray(Image.open(tmp_path / n).convert("RGB").resize((16, 16), Image.BILINEAR))
                       for n in names]).transpose(0, 3, 1, 2)
    model = load_model(run, device="cpu")
    with torch.no_grad():
        want = model.net.encode_image(torch.from_numpy(pixels.astype(np.float32) / 255 - 0.5)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "idx" / EMBEDDINGS), want, rtol=1e-5, atol=1e-6)
    assert index.image_files() == [str((tmp_path / n).resolve()) for n in names]
    capsys.readouterr()
    assert main(["index", "search", str(tmp_path / "idx"), "w1 w2", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["results"]
    assert [h["file"] for h in hits] == [index.image_files()[h["image"]] for h in hits]
    with pytest.raises(ValueError, match="reads pixels"):
        build_index(run, make_features(tmp_path / "f.npy"), tmp_path / "other")
    with pytest.raises(ValueError, match="either image features or image files"):
        build_index(run, None, tmp_path / "other")
    assert main(["index", "build", str(run), "--out", str(tmp_path / "none")]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_index_of_a_data_split(tmp_path, capsys):
    from conftest import write_tiny_dataset

    data = write_tiny_dataset(tmp_path / "data", dim_image=12)
    run = make_run(tmp_path / "run")
    assert main(["index", "build", str(run), "--split", "test", "--data", str(data), "--out", str(tmp_path / "idx"),
                 "--dtype", "float32"]) == 0
    model = load_model(run, device="cpu")
    want = encode_images(model, np.load(data / "images" / "10crop" / "test.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "idx" / EMBEDDINGS), want, rtol=1e-6, atol=1e-7)
    assert Index(tmp_path / "idx").image_files() is None
    capsys.readouterr()
    assert main(["index", "build", str(run), "--split", "test", "--out", str(tmp_path / "idx2")]) == 2
    assert "--split needs --data" in capsys.readouterr().err
