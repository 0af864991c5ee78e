"""Every input is read within bounds: regular files only, sizes, JSON nesting and line lengths bounded, any
float precision of weights, values checked as the model computes with them.

Cases that could hang or grow memory if a bound broke run as subprocesses with a timeout; the others run the
command line in process. Each checks the exit status, one line naming the file or option, no traceback, and
that the user's files are unchanged.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import TINY_FLAGS as TINY
from conftest import train_tiny_run
from helpers import Ran, free_port, run

from order_embedding import runs
from order_embedding.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
DEEP = 200_000


def cli(*argv: object, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command line in a fresh process, stopped after ``timeout`` seconds (a hang fails the test)."""
    return subprocess.run([sys.executable, "-m", "order_embedding", *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=timeout)


def refused(result: Ran | subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The command exited ``code`` with one line on stderr holding every needle, and no traceback."""
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny data set, one trained run, its index and a caption file."""
    root = tmp_path_factory.mktemp("reads")
    data, _ = train_tiny_run(root, max_epochs=1)
    feats = data / "images" / "10crop" / "test.npy"
    assert main(["index", "build", str(root / "runs" / "r"), str(feats), "--out", str(root / "idx")]) == 0
    (root / "caps.txt").write_text("a red thing\nthe blue one\nred blue\n")
    return {"root": root, "data": data, "run": root / "runs" / "r", "feats": feats, "caps": root / "caps.txt",
            "index": root / "idx"}


@pytest.fixture
def run_copy(world, tmp_path):
    return Path(shutil.copytree(world["run"], tmp_path / "r"))


# ------------------------------------------------------------------ only regular files, never blocking

def test_dev_zero_as_captions_is_refused_at_once(world, tmp_path):
    refused(cli("encode", world["run"], "--captions", "/dev/zero", "--out", tmp_path / "s.npy"),
            "/dev/zero", "not a regular file")
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_as_the_query_file_is_refused_without_hanging(world, tmp_path):
    os.mkfifo(tmp_path / "q")
    refused(cli("index", "search", world["index"], "--queries", tmp_path / "q"), str(tmp_path / "q"),
            "not a regular file")


def test_dev_zero_as_wordnet_data_is_refused(tmp_path, capsys):
    (tmp_path / "wn").mkdir()
    os.symlink("/dev/zero", tmp_path / "wn" / "data.noun")
    (tmp_path / "wn" / "index.noun").write_text("")
    refused(run(capsys, "hypernym", "--wordnet", tmp_path / "wn", "--save_dir", tmp_path, "--name", "run",
                "--quiet"),
            "data.noun", "not a regular file")


def test_dev_zero_as_an_snli_file_is_refused(tmp_path, capsys):
    refused(run(capsys, "entailment", *(x for s in ("train", "dev", "test") for x in (f"--{s}-file", "/dev/zero")),
                "--save_dir", tmp_path, "--quiet"), "/dev/zero", "not a regular file")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- nesting bounded

def test_a_deeply_nested_config_is_one_line(run_copy, capsys):
    (run_copy / "config.json").write_text("[" * DEEP + "]" * DEEP)
    before = hashes(run_copy)
    refused(run(capsys, "evaluate", run_copy), "config.json", "nested")
    assert hashes(run_copy) == before


def test_a_deeply_nested_karpathy_file_is_one_line(tmp_path, capsys):
    (tmp_path / "dataset_x.json").write_text('{"images": ' + "[" * DEEP + "]" * DEEP + "}")
    refused(run(capsys, "prepare", tmp_path / "dataset_x.json", "--out", tmp_path / "d"), "dataset_x.json", "nested")
    assert not (tmp_path / "d").exists()


def nested_pickle(depth: int) -> bytes:
    """A protocol-2 pickle of {"options": [[[...]]] (``depth`` lists deep), "worddict": {}}, built from opcodes
    (pickle.dumps itself recurses)."""
    def text(s: str) -> bytes:
        return b"X" + len(s).to_bytes(4, "little") + s.encode()
    nested = b"]" * depth + b"a" * (depth - 1)  # depth empty lists on the stack, each appended to the one below
    return b"\x80\x02}" + text("options") + nested + b"s" + text("worddict") + b"}s."


def test_a_deeply_nested_snapshot_pickle_is_one_line(tmp_path, capsys):
    assert pickle.loads(nested_pickle(3)) == {"options": [[[]]], "worddict": {}}
    (tmp_path / "snap.pkl").write_bytes(nested_pickle(DEEP))
    np.savez(tmp_path / "snap.npz", x=np.zeros(1))
    refused(run(capsys, "convert-legacy", tmp_path / "snap", tmp_path / "out"), "snap.pkl", "nested")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------- line ends

def test_cr_and_crlf_line_ends_read_as_lf(world, tmp_path, capsys):
    lines = world["caps"].read_text().splitlines()
    for name, end in (("lf", "\n"), ("crlf", "\r\n"), ("cr", "\r")):
        (tmp_path / f"{name}.txt").write_bytes(end.join(lines).encode() + end.encode())
        assert run(capsys, "encode", world["run"], "--captions", tmp_path / f"{name}.txt", "--out",
                   tmp_path / f"{name}.npy").returncode == 0
    lf = np.load(tmp_path / "lf.npy")
    assert lf.shape[0] == len(lines) == 3
    assert np.array_equal(np.load(tmp_path / "crlf.npy"), lf) and np.array_equal(np.load(tmp_path / "cr.npy"), lf)


# --------------------------------------------------------------------- weights of any precision

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_of_another_precision_load_as_float32(world, tmp_path, capsys, dtype):
    tensors, meta = runs.load_tensors(world["run"] / runs.BEST)
    stored = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    rounded = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}  # what float32 computes with
    for name, state in (("stored", stored), ("rounded", rounded)):
        shutil.copytree(world["run"], tmp_path / name)
        runs.save_tensors(tmp_path / name / runs.BEST, state, meta)
        assert run(capsys, "encode", tmp_path / name, "--captions", world["caps"], "--out",
                   tmp_path / f"{name}.npy").returncode == 0
        assert run(capsys, "encode", tmp_path / name, "--features", world["feats"], "--out",
                   tmp_path / f"{name}_im.npy").returncode == 0
    assert np.array_equal(np.load(tmp_path / "stored.npy"), np.load(tmp_path / "rounded.npy"))
    assert np.array_equal(np.load(tmp_path / "stored_im.npy"), np.load(tmp_path / "rounded_im.npy"))
    assert run(capsys, "evaluate", tmp_path / "stored", "--data", world["data"]).returncode == 0


# --------------------------------------------------------------------- values checked as computed

def test_float64_features_beyond_float32_are_refused(world, tmp_path, capsys):
    feats = np.load(world["feats"]).astype(np.float64)
    feats[2, 0] = 1e300  # finite in float64, infinite in the model's float32
    np.save(tmp_path / "f.npy", feats)
    refused(run(capsys, "encode", world["run"], "--features", tmp_path / "f.npy", "--out", tmp_path / "o.npy"),
            "f.npy", "1 feature row", "NaN or infinity")
    assert not (tmp_path / "o.npy").exists()


def test_a_truncated_npy_names_the_file(world, tmp_path, capsys):
    data = world["feats"].read_bytes()
    (tmp_path / "f.npy").write_bytes(data[: len(data) - 100])
    refused(run(capsys, "encode", world["run"], "--features", tmp_path / "f.npy", "--out", tmp_path / "o.npy"),
            str(tmp_path / "f.npy"), "truncated")


def test_serve_refuses_a_device_that_is_not_there(world, capsys):
    refused(run(capsys, "serve", world["root"] / "runs", "--device", "tpu"), "--device", "tpu")


def test_entailment_name_is_a_name_not_a_path(tmp_path, capsys):
    refused(run(capsys, "entailment", "--quick", "--save_dir", tmp_path / "runs", "--name", "../x", "--quiet"),
            "--name", "../x")
    assert list(tmp_path.iterdir()) == []


def test_unknown_words_are_reported_once(world, tmp_path, capsys):
    (tmp_path / "c.txt").write_text("a crimson thing\nA red shape.\na crimson one\n")
    r = run(capsys, "encode", world["run"], "--captions", tmp_path / "c.txt", "--out", tmp_path / "o.npy")
    assert r.returncode == 0
    warned = [line for line in r.stderr.splitlines() if "vocabulary" in line]
    assert len(warned) == 1 and "3 word(s)" in warned[0] and "crimson A shape." in warned[0], r.stderr


# ------------------------------------------------------------------------------- a real server

def test_a_live_server_answers_hostile_files_and_queries_in_json(world, tmp_path):
    """Nested JSON in a run's files and a 60 KB query: JSON answers of one short line, never a 500."""
    root = tmp_path / "runs"
    for name in ("deep_config", "deep_vocab", "deep_metrics"):
        shutil.copytree(world["run"], root / name)
    (root / "deep_config" / "config.json").write_text("[" * DEEP + "]" * DEEP)
    (root / "deep_vocab" / "vocab.json").write_text('{"words": ' + "[" * DEEP + "]" * DEEP + "}")
    with open(root / "deep_metrics" / "metrics.jsonl", "a") as f:
        f.write("[" * DEEP + "]" * DEEP + "\n")
    before = hashes(root)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "order_embedding", "serve", str(root), "--data", str(world["data"]),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": SRC})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                runs_table = httpx.get(f"{base}/api/runs", timeout=5)
                break
            except httpx.TransportError:
                assert time.time() < deadline, "the server did not answer"
                time.sleep(0.3)
        assert runs_table.status_code == 200
        rows = {r["id"]: r for r in runs_table.json()["runs"]}
        assert not rows["deep_config"]["ok"] and "nested" in rows["deep_config"]["error"]
        answers = [httpx.get(f"{base}/api/search", params={"run": name, "q": "a red thing"}, timeout=60)
                   for name in ("deep_config", "deep_vocab")]
        answers.append(httpx.get(f"{base}/api/metrics", params={"run": "deep_metrics"}, timeout=60))
        answers.append(httpx.get(f"{base}/api/search", params={"run": "deep_metrics", "q": "x" * 60_000}, timeout=60))
        for r in answers[:2]:
            assert 400 <= r.status_code < 500 and "nested" in r.json()["detail"], r.text
        assert answers[2].status_code == 200  # the nested line is skipped as a half-written one would be
        long_query = answers[3]
        assert long_query.status_code == 422 and len(long_query.content) < 300, long_query.text[:300]
        assert "q" in long_query.json()["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert hashes(root) == before


def test_resume_state_beyond_the_config_is_refused(world, tmp_path, capsys):
    shutil.copytree(world["run"], tmp_path / "r")
    tensors, meta = runs.load_tensors(tmp_path / "r" / runs.LAST)
    meta["state"]["epoch"] = 10**6
    runs.save_tensors(tmp_path / "r" / runs.LAST, tensors, meta)
    before = hashes(tmp_path)
    refused(run(capsys, "train", "--data", world["data"], "--save_dir", tmp_path, "--name", "r", "--resume", "true",
                "--max_epochs", "1", *TINY), "last.safetensors", "epoch 1000000", "cannot be resumed")
    assert hashes(tmp_path) == before


def test_a_fifo_listed_as_an_image_is_refused_without_being_read(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from order_embedding.vision.images import load_pixels, open_rgb

    fifo = tmp_path / "scene.png"
    os.mkfifo(fifo)
    with ThreadPoolExecutor(2) as pool:  # opening a FIFO for reading would block: a hang fails the timeout
        for read in (lambda: load_pixels([fifo], 8), lambda: open_rgb(fifo)):
            with pytest.raises(ValueError, match=f"^{fifo}: not a regular file$"):
                pool.submit(read).result(timeout=30)
