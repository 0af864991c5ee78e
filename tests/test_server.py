"""The web app's JSON API, through FastAPI's test client, over small runs trained here."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from helpers import free_port

pytest.importorskip("fastapi", reason="the server tests need the 'serve' extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="the server tests need the 'serve' extra (fastapi, uvicorn)")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the test client's notice about its HTTP library
    from fastapi.testclient import TestClient

from order_embedding import runs
from order_embedding.cli import build_parser
from order_embedding.data import load_split
from order_embedding.inference import encode_images, encode_sentences, load_model
from order_embedding.server import create_app
from order_embedding.server.store import MAX_K, MAX_QUERY_CHARS, RunStore
from order_embedding.train import trainer

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (235, 215, 40)}
SHAPES = ["square", "circle", "bar", "dot"]
SPLITS = {"train": 48, "dev": 16, "test": 16}


def build_workspace(root: Path) -> dict[str, Path]:
    """A tiny caption-image data set (original layout, features plus PNG files) and runs trained on it.

    Runs: ``order`` and ``symmetric`` (trained), ``broken`` (config.json is not JSON),
    ``halfway`` (config and a metrics log ending in a half-written line, no model yet)
    and ``hyper`` (a hypernym run logging dev accuracy for two measures). The data folder
    also describes each image's one object in a shapes-world scene file (``dataset_shapes.json``).
    """
    from PIL import Image

    data = root / "data"
    (data / "images" / "10crop").mkdir(parents=True)
    (data / "pics").mkdir()
    rng = np.random.default_rng(0)
    k = 0
    scenes = []
    for split, n in SPLITS.items():
        captions, files, features = [], [], []
        for _ in range(n):
            colour, shape = list(COLOURS)[rng.integers(4)], SHAPES[rng.integers(4)]
            f = np.zeros(8, np.float32)
            f[list(COLOURS).index(colour)] = 1
            f[4 + SHAPES.index(shape)] = 1
            features.append(f + 0.1 * rng.standard_normal(8).astype(np.float32))
            captions += [f"a {colour} {shape}", f"a {colour} shape", f"a {shape}", f"something {colour}",
                         f"the {colour} {shape} here"]
            scenes.append({"split": "val" if split == "dev" else split, "sentences": [{"raw": c} for c in captions[-5:]],
                           "objects": [{"shape": shape, "colour": colour, "size": "small", "position": "centre"}]})
            name = f"pics/{k:04d}.png"
            k += 1
            Image.new("RGB", (32, 32), COLOURS[colour]).save(data / name)
            files.append(name)
        (data / f"{split}.txt").write_text("\n".join(captions) + "\n")
        (data / f"{split}_images.txt").write_text("\n".join(files) + "\n")
        np.save(data / "images" / "10crop" / f"{split}.npy", np.stack(features))
    (data / "dataset_shapes.json").write_text(json.dumps({"images": scenes}))
    runs_dir = root / "runs"
    for preset in ("order", "symmetric"):
        trainer(preset, name=preset, save_dir=str(runs_dir), data=str(data), max_epochs=4, batch_size=16,
                validFreq=3, dispFreq=1, dim=16, dim_word=8, dim_image=8, lrate=0.01, verbose=False, device="cpu")
    (runs_dir / "broken").mkdir()
    (runs_dir / "broken" / runs.CONFIG).write_text('{"model": {"n_words": 10,')
    halfway = runs_dir / "halfway"
    halfway.mkdir()
    shutil.copy(runs_dir / "order" / runs.CONFIG, halfway / runs.CONFIG)
    (halfway / runs.METRICS).write_text(
        json.dumps({"event": "train", "uidx": 1, "epoch": 0, "examples": 16, "loss": 3.5, "time": 1.0}) + "\n"
        + "[1, 2]\n" + '{"event": "train", "uidx": 2, "epo')
    hyper = runs_dir / "hyper"
    hyper.mkdir()
    runs.save_json(hyper / runs.CONFIG, {"kind": "hypernym", "model": {"measures": ["order", "cosine"]},
                                         "train": {"order": {"dim": 50, "margin": 1.0}, "cosine": {"dim": 50}}})
    for measure, accs in (("order", [70.0, 85.5, 80.0]), ("cosine", [60.0, 62.5, 61.0])):
        for i, acc in enumerate(accs):
            runs.append_metrics(hyper, {"event": "train", "model": measure, "epoch": i + 1, "uidx": 10 * (i + 1),
                                        "examples": 100 * (i + 1), "loss": 1.0 / (i + 1), "time": float(i)})
            runs.append_metrics(hyper, {"event": "valid", "model": measure, "epoch": i + 1, "uidx": 10 * (i + 1),
                                        "examples": 100 * (i + 1), "dev_accuracy": acc, "threshold": 0.5,
                                        "best": acc == max(accs), "time": float(i)})
    return {"data": data, "runs": runs_dir, "pics": data / "pics"}


def records(run_dir: Path) -> list[dict]:
    """The JSON lines of a metrics log that parse, read directly."""
    out = []
    for line in (run_dir / runs.METRICS).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def numpy_errors(method: str, s: np.ndarray, im: np.ndarray) -> np.ndarray:
    """Captions x images errors by the paper's formulas, broadcast in NumPy."""
    s, im = s.astype(np.float64), im.astype(np.float64)
    if method == "order":
        return (np.maximum(0.0, s[:, None, :] - im[None, :, :]) ** 2).sum(-1)
    return -(s @ im.T)


def assert_top(errors: np.ndarray, indices: list[int], values: list[float], k: int) -> None:
    """``indices`` are the ``k`` smallest of ``errors`` in ascending order, with these error values."""
    assert len(indices) == min(k, len(errors))
    np.testing.assert_allclose(values, errors[indices], rtol=1e-4, atol=1e-6)
    assert all(a <= b + 1e-6 for a, b in zip(values, values[1:]))
    rest = np.delete(errors, indices)
    if rest.size:
        assert values[-1] <= rest.min() + 1e-6


def assert_rank(errors: np.ndarray, truth: list[int], rank: int) -> None:
    """``rank`` (1-based) is the best rank of the ``truth`` items among ``errors``, up to float ties."""
    e = errors[truth].min()
    assert int((errors < e - 1e-6).sum()) + 1 <= rank <= int((errors <= e + 1e-6).sum())


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    return build_workspace(tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def client(ws) -> TestClient:
    return TestClient(create_app(ws["runs"], image_root=ws["data"]))


@pytest.fixture(scope="module")
def reference(ws) -> dict[str, dict]:
    """Per trained run: the loaded model and the test split's embeddings and NumPy error matrix."""
    split = load_split(ws["data"], "test")
    out = {}
    for name in ("order", "symmetric"):
        model = load_model(ws["runs"] / name, device="cpu")
        s = encode_sentences(model, split.captions)
        im = encode_images(model, split.features)
        out[name] = {"model": model, "s": s, "im": im, "errors": numpy_errors(model.config.method, s, im),
                     "split": split}
    return out


def test_runs_lists_every_folder_with_errors_as_rows(client, ws):
    body = client.get("/api/runs").json()
    rows = {r["id"]: r for r in body["runs"]}
    assert sorted(rows) == ["broken", "halfway", "hyper", "order", "symmetric"]
    assert not rows["broken"]["ok"] and "config.json" in rows["broken"]["error"]
    half = rows["halfway"]
    assert half["ok"] and not half["has_model"] and not half["searchable"]
    assert half["updates"] == 1 and half["best"] is None
    for name in ("order", "symmetric"):
        row = rows[name]
        valid = [r for r in records(ws["runs"] / name) if r["event"] == "valid"]
        best = max(valid, key=lambda r: r["t2i"]["R@1"] + r["t2i"]["R@5"] + r["t2i"]["R@10"])
        assert row["ok"] and row["searchable"] and row["kind"] == "caption-image"
        assert row["best"][""]["t2i"] == best["t2i"] and row["best"][""]["i2t"] == best["i2t"]
        assert row["hyperparameters"]["method"] == ("order" if name == "order" else "cosine")
        assert row["updates"] == max(r["uidx"] for r in records(ws["runs"] / name))
    hyper = rows["hyper"]
    assert hyper["kind"] == "hypernym" and not hyper["searchable"]
    assert hyper["best"]["order"]["dev_accuracy"] == 85.5 and hyper["best"]["cosine"]["dev_accuracy"] == 62.5
    assert hyper["hyperparameters"]["order.margin"] == 1.0
    assert hyper["start"] is None and hyper["duration"] is None  # its record times (0-2) are not clock times
    one = client.get("/api/runs/order").json()
    config = json.loads((ws["runs"] / "order" / runs.CONFIG).read_text())
    assert sorted(one["config"]) == sorted(config) and one["config"]["model"] == config["model"]
    for key, value in config["train"].items():  # the config as written, with absolute paths shown by their end
        shown = one["config"]["train"][key]
        if isinstance(value, str) and value.startswith("/"):
            assert not shown.startswith("/") and shown.endswith(Path(value).name), (key, shown)
        else:
            assert shown == value, key
    assert client.get("/api/runs/nope").status_code == 404


def test_metrics_are_the_logged_points_and_follow_the_log_live(client, ws, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(ws["runs"] / "order", run)
    live = TestClient(create_app(tmp_path))
    first = live.get("/api/metrics", params={"run": "live"})
    assert first.headers["cache-control"] == "no-store"
    series = first.json()["runs"][0]["series"][""]
    logged = records(run)
    assert [(p["examples"], p["loss"]) for p in series["train"]] == \
        [(r["examples"], r["loss"]) for r in logged if r["event"] == "train"]
    assert [(p["examples"], p["t2i"], p["i2t"]) for p in series["valid"]] == \
        [(r["examples"], r["t2i"], r["i2t"]) for r in logged if r["event"] == "valid"]
    runs.append_metrics(run, {"event": "train", "uidx": 999, "epoch": 9, "examples": 123456, "loss": 0.25, "time": 2.0})
    after = live.get("/api/metrics", params={"run": "live"}).json()["runs"][0]["series"][""]["train"]
    assert after[-1]["examples"] == 123456 and after[-1]["loss"] == 0.25
    assert live.get("/api/runs").json()["runs"][0]["examples"] == 123456


def test_metrics_of_a_broken_and_a_hypernym_run(client):
    body = client.get("/api/metrics", params={"run": ["broken", "hyper", "halfway"]}).json()["runs"]
    broken, hyper, halfway = body
    assert broken["error"] and broken["series"] == {}
    assert sorted(hyper["series"]) == ["cosine", "order"]
    assert [p["dev_accuracy"] for p in hyper["series"]["order"]["valid"]] == [70.0, 85.5, 80.0]
    assert [p["loss"] for p in halfway["series"][""]["train"]] == [3.5]


def test_curves_match_ranks_recomputed_in_numpy(client, reference):
    for name, ref in reference.items():
        body = client.get("/api/curves", params={"run": name, "split": "test"}).json()
        split, errors = ref["split"], ref["errors"]
        n_img, n_cap = split.n_images, split.n_captions
        t = body["t2i"]
        assert t["queries"] == n_cap and len(t["recall"]) == n_img
        ranks = []
        for offset in range(0, n_cap, 50):
            page = client.get("/api/browse", params={"run": name, "split": "test", "direction": "t2i",
                                                     "offset": offset, "limit": 50}).json()
            ranks += [it["rank"] for it in page["items"]]
        assert len(ranks) == n_cap
        for c, rank in enumerate(ranks):
            assert_rank(errors[c], [int(split.cap2img[c])], rank)
        ranks = np.array(ranks)
        np.testing.assert_allclose(t["recall"], [np.mean(ranks <= k) for k in range(1, n_img + 1)], atol=1e-6)
        assert t["metrics"]["R@1"] == pytest.approx(100 * np.mean(ranks <= 1))
        assert t["metrics"]["R@10"] == pytest.approx(100 * np.mean(ranks <= 10))
        assert t["metrics"]["medr"] == pytest.approx(np.floor(np.median(ranks - 1)) + 1)
        i = body["i2t"]
        assert i["queries"] == n_img and len(i["recall"]) == n_cap and i["recall"][-1] == pytest.approx(1.0)
        assert i["metrics"]["R@5"] == pytest.approx(100 * i["recall"][4])


def test_browse_lists_top_ten_both_ways_and_filters_failures(client, reference):
    ref = reference["order"]
    split, errors = ref["split"], ref["errors"]
    page = client.get("/api/browse", params={"run": "order", "split": "test", "direction": "t2i", "limit": 7}).json()
    assert page["total"] == split.n_captions and len(page["items"]) == 7
    for it in page["items"]:
        c = it["query"]
        assert it["caption"] == split.captions[c] and it["image"] == split.cap2img[c]
        assert_top(errors[c], [t["image"] for t in it["top"]], [t["error"] for t in it["top"]], 10)
        assert [t["correct"] for t in it["top"]] == [t["image"] == it["image"] for t in it["top"]]
        assert it["image_url"].startswith("/api/image?run=order&split=test&index=")
    fails = client.get("/api/browse", params={"run": "order", "split": "test", "direction": "i2t", "failures": True,
                                              "limit": 50}).json()
    every = client.get("/api/browse", params={"run": "order", "split": "test", "direction": "i2t", "limit": 50}).json()
    assert fails["total"] == sum(it["rank"] > 1 for it in every["items"]) > 0
    assert all(it["rank"] > 1 for it in fails["items"])
    for it in every["items"]:
        own = list(np.flatnonzero(split.cap2img == it["image"]))
        assert it["captions"] == [split.captions[c] for c in own]
        assert_top(errors[:, it["image"]], [t["caption"] for t in it["top"]], [t["error"] for t in it["top"]], 10)
        assert_rank(errors[:, it["image"]], own, it["rank"])


def test_search_by_sentence_and_by_image(client, reference):
    for name, ref in reference.items():
        model, im, s = ref["model"], ref["im"], ref["s"]
        body = client.get("/api/search", params={"run": name, "split": "test", "q": "A  Red square.", "k": 5}).json()
        assert body["tokens"] == ["a", "red", "square"] and body["unknown"] == []
        q = encode_sentences(model, ["a red square"])
        errors = numpy_errors(model.config.method, q, im)[0]
        assert_top(errors, [r["image"] for r in body["results"]], [r["error"] for r in body["results"]], 5)
        odd = client.get("/api/search", params={"run": name, "split": "test", "q": "a zebra", "k": 3}).json()
        assert odd["unknown"] == ["zebra"] and len(odd["results"]) == 3
        body = client.get("/api/search", params={"run": name, "split": "test", "image": 3, "k": 12}).json()
        errors = numpy_errors(model.config.method, s, im[3:4])[:, 0]
        assert_top(errors, [r["caption"] for r in body["results"]], [r["error"] for r in body["results"]], 12)
        own = set(np.flatnonzero(ref["split"].cap2img == 3))
        assert [r["correct"] for r in body["results"]] == [r["caption"] in own for r in body["results"]]


def test_search_bounds_and_errors(client):
    def status(**params):
        return client.get("/api/search", params={"run": "order", "split": "test", **params}).status_code

    assert status(q="a red square", k=MAX_K) == 200
    assert status(q="a red square", k=MAX_K + 1) == 422
    assert status(q="a red square", k=0) == 422
    assert status(q="a " * (MAX_QUERY_CHARS // 2) + "x") == 422
    assert status() == 400 and status(q="a", image=1) == 400 and status(q="   ") == 400
    assert status(image=SPLITS["test"]) == 404
    assert status(q="a", split="../etc") == 400
    assert status(q="a", split="nosuchsplit") == 404
    assert client.get("/api/search", params={"run": "nope", "q": "a"}).status_code == 404
    hyper = client.get("/api/search", params={"run": "hyper", "q": "a"})
    assert hyper.status_code == 409 and "hypernym" in hyper.json()["detail"]
    half = client.get("/api/search", params={"run": "halfway", "q": "a"})
    assert half.status_code == 409 and "model.safetensors" in half.json()["detail"]
    assert client.get("/api/curves", params={"run": "broken"}).status_code == 409
    assert client.get("/api/browse", params={"run": "order", "limit": 51}).status_code == 422


def test_search_cache_follows_a_new_checkpoint(ws, tmp_path):
    shutil.copytree(ws["runs"] / "order", tmp_path / "order")
    app_client = TestClient(create_app(tmp_path, data_dir=ws["data"]))
    params = {"run": "order", "split": "test", "q": "a blue dot", "k": 4}
    before = app_client.get("/api/search", params=params).json()["results"]
    tensors, meta = runs.load_tensors(tmp_path / "order" / runs.BEST)
    tensors["image.fc.weight"] = -tensors["image.fc.weight"]
    runs.save_tensors(tmp_path / "order" / runs.BEST, tensors, meta)
    stat = (tmp_path / "order" / runs.BEST).stat()
    os.utime(tmp_path / "order" / runs.BEST, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = app_client.get("/api/search", params=params).json()["results"]
    model = load_model(tmp_path / "order", device="cpu")
    split = load_split(ws["data"], "test")
    errors = numpy_errors("order", encode_sentences(model, ["a blue dot"]), encode_images(model, split.features))[0]
    assert_top(errors, [r["image"] for r in after], [r["error"] for r in after], 4)
    assert [r["error"] for r in after] != [r["error"] for r in before]


def test_least_recently_used_models_are_dropped(ws, tmp_path):
    store = RunStore(ws["runs"], data_dir=ws["data"], max_models=1, max_splits=1)
    order = store.model("order")
    assert store.search_text("order", "test", "a red dot", 3)["results"]
    store.search_text("symmetric", "test", "a red dot", 3)
    assert list(store._models) == ["symmetric"]  # order and its embeddings were dropped
    assert store.model("order") is not order  # and come back when asked for
    assert list(store._models) == ["order"] and len(store._splits) == 1
    for name in "abc":
        shutil.copytree(ws["runs"] / "order", tmp_path / name)
    two = RunStore(tmp_path, data_dir=ws["data"], max_models=2)
    a = two.model("a")
    two.model("b")
    assert two.model("a") is a  # a hit makes a the most recently used...
    two.model("c")
    assert list(two._models) == ["a", "c"]  # ...so b goes first
    with pytest.raises(ValueError, match="max_models"):
        RunStore(ws["runs"], max_models=0)


def test_search_of_on_disk_indexes(ws, tmp_path):
    from order_embedding.index import build_index
    from order_embedding.model import ModelConfig, OrderEmbeddingModel
    from order_embedding.vocab import Vocabulary

    split = load_split(ws["data"], "test")
    features_index = build_index(ws["runs"] / "order", split.features, tmp_path / "feats", dtype="float32")
    # a pixel model indexing the split's image files
    torch.manual_seed(0)
    config = ModelConfig(n_words=10, dim_word=4, dim=8, dim_image=8, backbone="small_cnn",
                         backbone_options={"image_size": 16, "width": 4})
    pixel_run = tmp_path / "pixel-run"
    pixel_run.mkdir()
    Vocabulary(["a", "red", "blue", "dot"]).save(pixel_run / runs.VOCAB)
    runs.save_json(pixel_run / runs.CONFIG, {"kind": "caption-image", "model": config.to_dict(), "train": {}})
    runs.save_tensors(pixel_run / runs.BEST, OrderEmbeddingModel(config).state_dict(), {})
    files_index = build_index(pixel_run, None, tmp_path / "files", images=[ws["data"] / f for f in split.image_files])
    app = TestClient(create_app(ws["runs"], image_root=ws["data"], indexes=[features_index, files_index]))
    listed = {ix["name"]: ix for ix in app.get("/api/indexes").json()["indexes"]}
    assert listed["feats"]["images"] == split.n_images and not listed["feats"]["has_files"]
    assert listed["files"]["has_files"] and listed["files"]["method"] == "order"
    got = app.get("/api/index-search", params={"index": "feats", "q": "a blue dot", "k": 5}).json()
    model = load_model(ws["runs"] / "order", device="cpu")
    errors = numpy_errors("order", encode_sentences(model, ["a blue dot"]), np.load(features_index / "embeddings.npy"))[0]
    assert_top(errors, [r["image"] for r in got["results"]], [r["error"] for r in got["results"]], 5)
    assert got["tokens"] == ["a", "blue", "dot"]
    placeholder = app.get(got["results"][0]["image_url"])
    assert placeholder.headers["content-type"].startswith("image/svg")  # this index lists no files
    hit = app.get("/api/index-search", params={"index": "files", "q": "a red dot", "k": 3}).json()["results"][0]
    image = app.get(hit["image_url"])
    assert image.headers["content-type"] == "image/png"
    assert image.content == (ws["data"] / split.image_files[hit["image"]]).read_bytes()
    outside = TestClient(create_app(ws["runs"], image_root=tmp_path,
                                    indexes=[files_index]))
    assert outside.get(hit["image_url"]).headers["content-type"].startswith("image/svg")  # not under the root
    assert app.get("/api/index-search", params={"index": "nope", "q": "a dot"}).status_code == 404
    assert app.get("/api/index-image", params={"index": "feats", "image": 10**6}).status_code == 404
    assert app.get("/api/index-search", params={"index": "feats", "q": "  "}).status_code == 400
    with pytest.raises(ValueError, match="two indexes"):
        create_app(ws["runs"], indexes=[features_index, features_index])


def test_images_are_served_only_from_under_the_root(ws, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(ws["pics"], root / "pics")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", root / "pics" / "link.png")
    c = TestClient(create_app(ws["runs"], image_root=root))
    ok = c.get("/images/pics/0000.png")
    assert ok.status_code == 200 and ok.content == (ws["pics"] / "0000.png").read_bytes()
    for bad in ("/images/../secret.txt", "/images/pics/../../secret.txt", "/images/%2e%2e/secret.txt",
                "/images/pics/%2e%2e%2f%2e%2e%2fsecret.txt", "/images/..%5csecret.txt", "/images/pics/link.png",
                f"/images/{tmp_path}/secret.txt", f"/images//{tmp_path}/secret.txt", "/images/pics", "/images/"):
        r = c.get(bad)
        assert r.status_code == 404 and b"secret" != r.content, bad
    assert TestClient(create_app(ws["runs"])).get("/images/pics/0000.png").status_code == 404


def test_dataset_paths_outside_the_root_get_placeholders(ws, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ws["data"], data)
    (tmp_path / "outside.png").write_bytes((ws["pics"] / "0000.png").read_bytes())
    lines = (data / "test_images.txt").read_text().splitlines()
    lines[0] = "../outside.png"
    (data / "test_images.txt").write_text("\n".join(lines) + "\n")
    c = TestClient(create_app(ws["runs"], data_dir=data))
    leaked = c.get("/api/image", params={"run": "order", "split": "test", "index": 0})
    assert leaked.headers["content-type"].startswith("image/svg+xml") and b"test #0" in leaked.content
    fine = c.get("/api/image", params={"run": "order", "split": "test", "index": 1})
    assert fine.headers["content-type"] == "image/png"
    assert fine.content == (data / lines[1]).read_bytes()
    assert c.get("/api/image", params={"run": "order", "split": "test", "index": 99}).status_code == 404
    (data / "test_images.txt").unlink()
    no_files = TestClient(create_app(ws["runs"], data_dir=data))
    svg = no_files.get("/api/image", params={"run": "order", "split": "test", "index": 5})
    assert svg.status_code == 200 and b"test #5" in svg.content
    assert no_files.get("/api/search", params={"run": "order", "split": "test", "q": "a red dot"}).status_code == 200


def test_pages_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    for src in ("/static/app.js", "/static/style.css"):
        assert src in page.text and client.get(src).status_code == 200
    for route in ("/api/runs", "/api/metrics", "/api/curves", "/api/browse", "/api/search", "/api/image"):
        assert route in client.get("/api/openapi.json").json()["paths"]


def test_serve_command_defaults_and_bad_folders(tmp_path):
    args = build_parser().parse_args(["serve", str(tmp_path)])
    assert (args.host, args.port, args.data, args.images) == ("127.0.0.1", 8000, None, None)
    with pytest.raises(ValueError, match="runs folder not found"):
        create_app(tmp_path / "missing")
    with pytest.raises(ValueError, match="image root"):
        create_app(tmp_path, image_root=tmp_path / "missing")


def test_a_corrupt_checkpoint_is_an_error_answer_not_a_crash(ws, tmp_path):
    shutil.copytree(ws["runs"] / "order", tmp_path / "cut")
    best = tmp_path / "cut" / runs.BEST
    best.write_bytes(best.read_bytes()[:100])
    (tmp_path / "empty").mkdir()
    c = TestClient(create_app(tmp_path))
    rows = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
    assert rows["cut"]["ok"] and not rows["empty"]["ok"] and "config.json" in rows["empty"]["error"]
    r = c.get("/api/search", params={"run": "cut", "q": "a red dot"})
    assert r.status_code == 409 and "corrupt or truncated" in r.json()["detail"]


@pytest.mark.slow
def test_serve_command_answers_on_localhost(ws):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "order_embedding", "serve", str(ws["runs"]), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=2)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "the server did not answer"
                time.sleep(0.2)
        assert r.status_code == 200 and len(r.json()["runs"]) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# ---------------------------------------------------------------------- hostile input against a live server

def disk_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: its kind, link target or size, and for regular files their bytes' hash
    (read with lstat, so a FIFO is never opened)."""
    import hashlib
    import stat as st

    out = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if st.S_ISLNK(info.st_mode):
            out[str(path)] = ("link", os.readlink(path))
        elif st.S_ISREG(info.st_mode):
            out[str(path)] = ("file", info.st_size, info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            out[str(path)] = (st.S_IFMT(info.st_mode), info.st_mtime_ns)
    return out


def one_line(response: httpx.Response) -> str:
    """The error message of an answer, checked to be one line."""
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail, detail
    return detail


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def hostile(ws, tmp_path_factory):
    """A workspace of runs with unreadable files, its data and an index, served by ``order-embedding serve``
    on a free loopback port (in a child process, so that a frozen server cannot freeze the tests)."""
    from order_embedding.index import build_index

    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(ws["data"], root / "data")
    for name in ("order", "fifo", "zero"):
        shutil.copytree(ws["runs"] / "order", root / "runs" / name)
    (root / "runs" / "fifo" / runs.CONFIG).unlink()
    os.mkfifo(root / "runs" / "fifo" / runs.CONFIG)
    (root / "runs" / "zero" / runs.BEST).unlink()
    os.symlink("/dev/zero", root / "runs" / "zero" / runs.BEST)
    build_index(root / "runs" / "order", load_split(root / "data", "test").features, root / "shapes")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "order_embedding", "serve", str(root / "runs"), "--data",
                             str(root / "data"), "--images", str(root / "data"), "--index", str(root / "shapes"),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            httpx.get(base + "/api/indexes", timeout=2)
            break
        except httpx.TransportError:
            assert time.time() < deadline, "the server did not answer"
            time.sleep(0.2)
    before = disk_state(root)
    yield {"root": root, "base": base, "pid": proc.pid}
    try:
        assert proc.poll() is None, "the server died"
        assert disk_state(root) == before, "serving changed files on disk"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def get(hostile, route: str, **params) -> httpx.Response:
    """One request, answered within 10 s or failed."""
    return httpx.get(hostile["base"] + route, params=params, timeout=10)


@pytest.mark.slow
def test_an_unreadable_run_is_an_error_row_and_never_freezes_the_server(hostile):
    for _ in range(50):  # more requests than the server has threads
        t = time.time()
        r = get(hostile, "/api/runs")
        assert r.status_code == 200 and time.time() - t < 10
        rows = {row["id"]: row for row in r.json()["runs"]}
        assert not rows["fifo"]["ok"] and rows["fifo"]["error"] == "runs/fifo/config.json: not a regular file"
        assert rows["order"]["ok"] and rows["zero"]["ok"]
    r = get(hostile, "/api/runs/fifo")
    assert r.status_code == 200 and r.json()["config"] is None
    r = get(hostile, "/api/search", run="fifo", q="a red dot")
    assert r.status_code == 409 and one_line(r) == "runs/fifo/config.json: not a regular file"
    r = get(hostile, "/api/metrics", run="fifo")
    assert r.status_code == 200 and r.json()["runs"][0]["error"] == "runs/fifo/config.json: not a regular file"
    memory = rss_kib(hostile["pid"])
    for _ in range(5):
        r = get(hostile, "/api/search", run="zero", q="a red dot")
        assert r.status_code == 409 and one_line(r) == "runs/zero/model.safetensors: not a regular file"
    assert rss_kib(hostile["pid"]) - memory < 100_000  # /dev/zero was never read
    assert get(hostile, "/api/search", run="order", q="a red dot").status_code == 200


@pytest.mark.slow
def test_bad_queries_and_split_names_get_one_line_answers(hostile):
    for i in range(50):
        r = get(hostile, "/api/search", run="order", split=f"nosuch{i}", q="a red dot")
        assert r.status_code == 404 and one_line(r) == f"data: no split 'nosuch{i}' (splits: dev, test, train, val)"
    for params, status, message in (
            ({"q": "   "}, 400, "query is empty: type at least one word"),
            ({"q": "a", "split": "../etc"}, 400, "bad split name '../etc'"),
            ({"q": "a", "image": 1}, 400, "give exactly one of q (a sentence) or image (an image index)"),
            ({"image": 99}, 404, "split 'test' has images 0..15, not 99")):
        r = get(hostile, "/api/search", run="order", **params)
        assert r.status_code == status and one_line(r) == message, params
    r = get(hostile, "/api/index-search", index="shapes", q="")
    assert r.status_code == 400 and one_line(r) == "query is empty: type at least one word"
    r = get(hostile, "/api/search", run="order", q="a " * MAX_QUERY_CHARS)
    assert r.status_code == 422


@pytest.mark.slow
def test_answers_show_no_absolute_paths(hostile):
    root = str(hostile["root"])
    answers = [get(hostile, "/api/runs"), get(hostile, "/api/runs/order"), get(hostile, "/api/runs/fifo"),
               get(hostile, "/api/indexes"), get(hostile, "/api/metrics", run=["fifo", "zero"]),
               get(hostile, "/api/search", run="zero", q="a"), get(hostile, "/api/search", run="order", split="x", q="a")]
    for r in answers:
        assert root not in r.text and "/pytest-of-" not in r.text, r.text[:300]
    body = answers[0].json()
    assert (body["runs_dir"], body["data_dir"], body["image_root"]) == ("runs", "data", "data")
    assert answers[3].json()["indexes"][0]["run"] == "runs/order"
    assert answers[1].json()["config"]["train"]["data"] in ("data", "…/data")


@pytest.mark.slow
def test_listing_a_run_prepares_its_search_in_the_background(hostile):
    deadline = time.time() + 60
    while True:
        row = next(r for r in get(hostile, "/api/runs").json()["runs"] if r["id"] == "order")
        if row["prepared"]["state"] == "ready":
            break
        assert row["prepared"]["state"] == "preparing" and time.time() < deadline, row["prepared"]
        time.sleep(0.2)
    assert row["prepared"] == {"split": "test", "state": "ready", "error": None}
    zero = next(r for r in get(hostile, "/api/runs").json()["runs"] if r["id"] == "zero")
    assert not zero["has_model"] and not zero["searchable"] and zero["prepared"] is None


def test_a_bad_index_is_one_line_at_startup_and_in_index_search(ws, tmp_path):
    from order_embedding.index import build_index

    good = build_index(ws["runs"] / "order", load_split(ws["data"], "test").features, tmp_path / "good")
    meta = json.loads((good / "index.json").read_text())
    cases = {"no-count": ({k: v for k, v in meta.items() if k != "count"}, "count must be a whole number, got None"),
             "bad-dtype": ({**meta, "dtype": "int8"}, "dtype must be one of float16, float32, got 'int8'"),
             "bad-measure": ({**meta, "method": "euclid"}, "method must be one of order, cosine, got 'euclid'")}
    for name, (bad, _) in cases.items():
        shutil.copytree(good, tmp_path / name)
        (tmp_path / name / "index.json").write_text(json.dumps(bad))
    before = disk_state(tmp_path)
    cli = [sys.executable, "-m", "order_embedding"]
    for name, (_, message) in cases.items():
        line = f"{tmp_path / name / 'index.json'}: {message}"
        serve = subprocess.run(cli + ["serve", str(ws["runs"]), "--index", str(tmp_path / name), "--port",
                                      str(free_port())], capture_output=True, text=True, timeout=60)
        search = subprocess.run(cli + ["index", "search", str(tmp_path / name), "a red dot"],
                                capture_output=True, text=True, timeout=60)
        for done, command in ((serve, "serve"), (search, "index")):
            assert done.returncode == 2 and done.stderr == f"order-embedding {command}: error: {line}\n", done.stderr
    empty = subprocess.run(cli + ["index", "search", str(good), "  "], capture_output=True, text=True, timeout=60)
    assert empty.returncode == 2
    assert empty.stderr == "order-embedding index: error: query is empty: type at least one word\n"
    assert disk_state(tmp_path) == before


def karpathy_data(ws, root: Path) -> Path:
    """The test split of the workspace as a Karpathy ``dataset_shapes.json`` (images 0-11 test, 12-15 val)."""
    split = load_split(ws["data"], "test")
    images = [{"split": "test" if i < 12 else "val", "filename": f"{i}.png",
               "sentences": [{"tokens": split.captions[c].split()} for c in np.flatnonzero(split.cap2img == i)]}
              for i in range(split.n_images)]
    (root / "images" / "10crop").mkdir(parents=True)
    (root / "dataset_shapes.json").write_text(json.dumps({"images": images}))
    np.save(root / "images" / "10crop" / "dataset_shapes.npy", split.features)
    return root


def test_a_data_set_is_parsed_once_for_any_number_of_unknown_split_names(ws, tmp_path, monkeypatch):

    data = karpathy_data(ws, tmp_path / "karpathy")
    parsed = []
    real_load = runs.load_json
    # only this data set's file counts (a preparation of another test's data may still be reading its own)
    monkeypatch.setattr(runs, "load_json",
                        lambda path, *a, **kw: (Path(path).parent == data and parsed.append(path)) or real_load(path, *a, **kw))
    c = TestClient(create_app(ws["runs"], data_dir=data, prepare=False))
    for i in range(50):
        r = c.get("/api/search", params={"run": "order", "split": f"x{i}", "q": "a red dot"})
        assert r.status_code == 404 and one_line(r) == f"karpathy: no split 'x{i}' (splits: dev, test, val)"
    assert len(parsed) == 1  # the split names, read once
    assert c.get("/api/search", params={"run": "order", "split": "val", "q": "a red dot", "k": 4}).status_code == 200
    assert c.get("/api/search", params={"run": "order", "split": "nope", "q": "a"}).status_code == 404
    assert len(parsed) == 3  # and the val split itself, and its scenes for the truth marks (none in this file)


def test_a_burst_shares_one_preparation_and_expensive_work_runs_one_at_a_time(ws, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import order_embedding.server.store as store_module

    active, most, calls = [0], [0], []
    real = store_module.encode_images

    def counted(*args, **kwargs):
        active[0] += 1
        most[0] = max(most[0], active[0])
        calls.append(args[0])
        try:
            time.sleep(0.2)  # long enough for the burst to pile up
            return real(*args, **kwargs)
        finally:
            active[0] -= 1

    monkeypatch.setattr(store_module, "encode_images", counted)
    store = RunStore(ws["runs"], data_dir=ws["data"], prepare=False)
    sentences = ["a red dot", "a blue square", "something green", "the yellow bar here", "a circle"]
    jobs = [(run, split, sentences[i % 5], 3 + i % 4) for i, (run, split) in
            enumerate([(run, split) for run in ("order", "symmetric") for split in ("dev", "test")] * 16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: store.search_text(*job), jobs))
    assert len(calls) == 4 and most[0] == 1  # one encoding per run and split, never two at once
    for run in ("order", "symmetric"):  # queries encoded together get each their own answer
        model = load_model(ws["runs"] / run, device="cpu")
        for split_name in ("dev", "test"):
            split = load_split(ws["data"], split_name)
            im = real(model, split.features)
            for (r, sp, sentence, k), answer in zip(jobs, answers):
                if (r, sp) == (run, split_name):
                    errors = numpy_errors(model.config.method, encode_sentences(model, [sentence]), im)[0]
                    got = answer["results"]
                    assert_top(errors, [x["image"] for x in got], [x["error"] for x in got], k)


# ---------------------------------------------------------------------- runs table, results, probe, truth


def test_runs_rows_name_status_times_score_and_every_option(ws, tmp_path, monkeypatch):
    folder = tmp_path / "many"
    for name in ("stopped", "finished", "training"):
        shutil.copytree(ws["runs"] / "order", folder / name)
    # a run that was stopped: its log without the record the loop appends when it ends
    log = folder / "stopped" / runs.METRICS
    log.write_text("".join(line for line in log.read_text().splitlines(True) if '"finished"' not in line))
    runs.append_metrics(folder / "finished", {"event": "finished", "time": 1e10})
    lock = runs.lock_run(folder / "training")  # what a trainer holds while it writes the folder
    try:
        monkeypatch.chdir(tmp_path)
        body = TestClient(create_app("many")).get("/api/runs").json()
    finally:
        lock.close()
    assert body["runs_dir"] == "many"  # the folder as it was given
    rows = {r["id"]: r for r in body["runs"]}
    assert {n: rows[n]["status"] for n in rows} == {"stopped": "stopped", "finished": "finished", "training": "training"}
    logged = [r for r in records(ws["runs"] / "order") if r["event"] != "finished"]  # as the stopped copy holds them
    times = [r["time"] for r in logged]
    row = rows["stopped"]
    assert row["start"] == min(times) and row["duration"] == pytest.approx(max(times) - min(times))
    assert rows["finished"]["duration"] == pytest.approx(1e10 - min(times))
    valid = [r for r in logged if r["event"] == "valid"]
    assert row["best_score"] == {"": max(r["t2i"]["R@1"] + r["t2i"]["R@5"] + r["t2i"]["R@10"] for r in valid)}
    config = json.loads((ws["runs"] / "order" / runs.CONFIG).read_text())
    everything = {}
    for key, value in {**config["model"], **config["train"]}.items():
        if isinstance(value, dict) and value:
            everything.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            everything[key] = value
    assert set(row["options"]) == set(everything)
    for key, value in everything.items():
        if not (isinstance(value, str) and value.startswith("/")):
            assert row["options"][key] == value, key
    assert row["options"]["cnn"] == "10crop" and row["kind"] == row["task"] == "caption-image"
    # a run reading pixels through a backbone used no features: no cnn among its options
    pixel = folder / "stopped"
    config["train"]["backbone"] = config["model"]["backbone"] = "small_cnn"
    config["model"]["backbone_options"] = config["train"]["backbone_options"] = {"image_size": 16, "width": 4}
    runs.save_json(pixel / runs.CONFIG, config)
    again = {r["id"]: r for r in TestClient(create_app(folder)).get("/api/runs").json()["runs"]}["stopped"]
    assert "cnn" not in again["options"] and "cnn" not in again["hyperparameters"]
    assert again["options"]["backbone_options.width"] == 4


def test_a_held_lock_is_seen_with_and_without_the_systems_lock_list(tmp_path, monkeypatch):
    from order_embedding.server import runs_view

    run = tmp_path / "run"
    lock = runs.lock_run(run)
    assert runs_view.lock_held(run / runs.LOCK)
    monkeypatch.setattr(runs_view, "PROC_LOCKS", tmp_path / "no-such-list")  # the probe by a shared lock
    assert runs_view.lock_held(run / runs.LOCK)
    lock.close()
    assert not runs_view.lock_held(run / runs.LOCK)
    runs.lock_run(run).close()  # looking took no lock: a trainer can still take it
    monkeypatch.undo()
    assert not runs_view.lock_held(run / runs.LOCK) and not runs_view.lock_held(tmp_path / "absent")


def test_learning_rate_changes_follow_the_schedule(ws, tmp_path):
    run = tmp_path / "runs" / "stepped"
    shutil.copytree(ws["runs"] / "order", run)
    config = json.loads((run / runs.CONFIG).read_text())
    config["train"].update(lrate=0.01, lr_update=3, max_epochs=10)
    runs.save_json(run / runs.CONFIG, config)
    app = TestClient(create_app(tmp_path / "runs"))
    expected = [{"epoch": e, "lr": 0.01 * 0.1 ** (e // 3)} for e in (3, 6, 9)]
    row = app.get("/api/runs").json()["runs"][0]
    assert [c["epoch"] for c in row["lr_changes"]] == [3, 6, 9]
    assert [c["lr"] for c in row["lr_changes"]] == pytest.approx([c["lr"] for c in expected])
    assert app.get("/api/metrics", params={"run": "stepped"}).json()["runs"][0]["lr_changes"] == row["lr_changes"]


def test_results_are_read_from_the_run_folder_once_per_change(ws, tmp_path):
    run = tmp_path / "runs" / "demo-order"
    shutil.copytree(ws["runs"] / "order", run)
    figures = {"kind": "demo", "protocol": "mean over 5 folds of 1,000 test images",
               "order": {"t2i": {"R@1": 50.5}}, "baselines": {"word count": {"t2i": {"R@1": 10.0}}},
               "roc": {"auc": 0.75, "fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.9, 1.0]}}
    (run / "results.json").write_text(json.dumps(figures))
    app = TestClient(create_app(tmp_path / "runs"))
    row = app.get("/api/runs").json()["runs"][0]
    assert row["has_results"] and row["kind"] == "demo" and row["task"] == "caption-image" and row["searchable"]
    got = app.get("/api/results", params={"run": "demo-order"}).json()
    assert got["results"] == figures and got["kind"] == "demo"
    # the same bytes' length and time in place: still the parsed copy (not read again per request) ...
    stat = (run / "results.json").stat()
    changed = json.dumps({**figures, "protocol": "X" * len(figures["protocol"])})
    assert len(changed) == len(json.dumps(figures))
    (run / "results.json").write_text(changed)
    os.utime(run / "results.json", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert app.get("/api/results", params={"run": "demo-order"}).json()["results"] == figures
    # ... and a rewritten file is read again
    (run / "results.json").write_text(json.dumps({"kind": "demo", "protocol": "5K"}))
    assert app.get("/api/results", params={"run": "demo-order"}).json()["results"]["protocol"] == "5K"
    assert app.get("/api/results", params={"run": "order"}).status_code == 404  # not under this folder
    (run / "results.json").write_text("[1, 2]")
    assert app.get("/api/results", params={"run": "demo-order"}).status_code == 409


def test_probe_errors_match_the_formula_on_the_encoded_sentences(client, reference):
    for name in ("order", "symmetric"):
        model = reference[name]["model"]
        got = client.get("/api/probe", params={"run": name, "a": "a Red shape.", "b": "a red square zzz"}).json()
        assert got["a"]["tokens"] == ["a", "red", "shape"] and got["a"]["unknown"] == []
        assert got["b"]["unknown"] == ["zzz"]
        v = encode_sentences(model, ["a red shape", "a red square zzz"]).astype(np.float64)
        if name == "order":
            e_ab, e_ba = (np.maximum(0, v[0] - v[1]) ** 2).sum(), (np.maximum(0, v[1] - v[0]) ** 2).sum()
        else:
            e_ab = e_ba = -(v[0] @ v[1])
        assert got["method"] == model.config.method
        assert (got["E_ab"], got["E_ba"]) == pytest.approx((e_ab, e_ba), rel=1e-4, abs=1e-6)
        img = client.get("/api/probe", params={"run": name, "a": "a red square", "image": 3}).json()
        s = encode_sentences(model, ["a red square"])
        errors = numpy_errors(model.config.method, s, reference[name]["im"][3:4])[0, 0]
        assert img["E_a_image"] == pytest.approx(errors, rel=1e-4, abs=1e-6)
        split_errors = reference[name]["errors"][:, 3]
        e = img["E_a_image"]
        assert int((split_errors < e - 1e-5).sum()) + 1 <= img["rank"] <= int((split_errors < e + 1e-5).sum()) + 1
        split = reference[name]["split"]
        assert [c["text"] for c in img["own_captions"]] == [split.captions[c] for c in np.flatnonzero(split.cap2img == 3)]
    assert client.get("/api/probe", params={"run": "order", "a": "a"}).status_code == 400
    assert client.get("/api/probe", params={"run": "hyper", "a": "a", "b": "b"}).status_code == 409
    assert client.get("/api/probe", params={"run": "order", "a": "a", "image": 10_000}).status_code == 404


def expected_truth(caption: str, scene: dict) -> bool | None:
    """Whether a caption of the test data set ("a [colour] [square|circle|shape]") is true of a one-object
    scene, by the words; None for captions with words outside the shapes world's."""
    words = caption.split()
    if words[0] != "a" or not set(words[1:]) <= set(COLOURS) | {"square", "circle", "shape"}:
        return None
    colours, shapes = [w for w in words if w in COLOURS], [w for w in words if w in ("square", "circle")]
    return all(c == scene["colour"] for c in colours) and all(s == scene["shape"] for s in shapes)


def test_browse_marks_every_truly_described_image(client, ws, reference):
    scenes = [im["objects"][0] for im in json.loads((ws["data"] / "dataset_shapes.json").read_text())["images"]
              if im["split"] == "test"]
    page = client.get("/api/browse", params={"run": "order", "direction": "t2i", "limit": 50}).json()
    assert page["judged"] and "16 images ranked at once" in page["protocol"]
    judged = 0
    for item in page["items"]:
        for t in item["top"]:
            assert t["true"] == expected_truth(item["caption"], scenes[t["image"]]), (item["caption"], t)
            judged += t["true"] is not None
    assert judged > 100  # most captions are judged, not only the paired image
    assert any(t["true"] and not t["correct"] for item in page["items"] for t in item["top"])
    images = client.get("/api/browse", params={"run": "order", "direction": "i2t", "limit": 5}).json()
    for item in images["items"]:
        for t in item["top"]:
            assert t["true"] == expected_truth(t["text"], scenes[item["image"]])
    found = client.get("/api/search", params={"run": "order", "q": "a red shape", "k": 16}).json()
    assert found["judged"] and [r["true"] for r in found["results"]] == \
        [scenes[r["image"]]["colour"] == "red" for r in found["results"]]
