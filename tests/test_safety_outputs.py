"""Outputs never destroy inputs or foreign folders; a failed or interrupted command leaves what was there.

Each case runs the command line (in process through ``main``, or as a subprocess where the process itself
matters: signals, file modes) and checks its exit status, its one line of error naming the file or option,
the absence of a traceback, and every byte of the user's files (hashed before and after).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import train_tiny_run
from helpers import Ran, run

SRC = str(Path(__file__).resolve().parents[1] / "src")


def refused(result: Ran, *needles: str, code: int = 2) -> str:
    """The command exited ``code`` with one line on stderr holding every needle, and no traceback."""
    err = result.stderr.strip()
    assert result.returncode == code, (result.returncode, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def hashes(*roots: Path) -> dict[str, str]:
    """Every file under (or at) ``roots`` with the hash of its bytes, and every folder's listing."""
    out = {}
    for root in roots:
        for p in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny data set, one trained run and a feature file, shared by the cases that must leave them unchanged."""
    root = tmp_path_factory.mktemp("safety")
    data, _ = train_tiny_run(root, max_epochs=1)
    feats = root / "feats.npy"
    shutil.copy(data / "images" / "10crop" / "test.npy", feats)
    (root / "caps.txt").write_text("a red thing\nthe blue one\n")
    return {"root": root, "data": data, "run": root / "runs" / "r", "feats": feats, "caps": root / "caps.txt"}


def test_index_build_overwrite_never_replaces_a_run_folder(world, capsys):
    before = hashes(world["root"])
    refused(run(capsys, "index", "build", world["run"], world["feats"], "--out", world["run"], "--overwrite"),
            "--out", str(world["run"]))
    assert hashes(world["root"]) == before


@pytest.mark.parametrize("target", ["data", "root"])
def test_index_build_overwrite_never_replaces_a_data_folder_or_one_holding_the_inputs(world, target, capsys):
    before = hashes(world["root"])
    refused(run(capsys, "index", "build", world["run"], world["feats"], "--out", world[target], "--overwrite"), "--out")
    assert hashes(world["root"]) == before


def test_index_build_overwrite_replaces_an_index_folder_and_only_with_overwrite(world, tmp_path, capsys):
    out = tmp_path / "idx"
    assert run(capsys, "index", "build", world["run"], world["feats"], "--out", out).returncode == 0
    first = hashes(out)
    refused(run(capsys, "index", "build", world["run"], world["feats"], "--out", out), "already exists", "--overwrite")
    assert hashes(out) == first
    half = world["feats"].parent / "half.npy"
    np.save(half, np.load(world["feats"])[:7])
    try:
        assert run(capsys, "index", "build", world["run"], half, "--out", out, "--overwrite").returncode == 0
    finally:
        half.unlink()
    assert json.loads((out / "index.json").read_text())["count"] == 7
    assert np.load(out / "embeddings.npy").shape[0] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]  # no staging folder or old copy left beside it


def test_index_build_overwrite_refuses_a_folder_of_other_files(world, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = hashes(tmp_path)
    refused(run(capsys, "index", "build", world["run"], world["feats"], "--out", tmp_path / "mine", "--overwrite"),
            "not an index folder")
    assert hashes(tmp_path) == before


def test_evaluate_json_onto_the_runs_config_is_refused(world, capsys):
    before = hashes(world["root"])
    refused(run(capsys, "evaluate", world["run"], "--json", world["run"] / "config.json"), "--json", "config.json")
    assert hashes(world["root"]) == before


def test_encode_out_inside_a_run_folder_is_refused(world, capsys):
    before = hashes(world["root"])
    refused(run(capsys, "encode", world["run"], "--features", world["feats"], "--out", world["run"] / "model.safetensors"),
            "--out", "run folder")
    assert hashes(world["root"]) == before


def test_encode_out_equal_to_its_captions_is_refused(world, capsys):
    before = hashes(world["root"])
    refused(run(capsys, "encode", world["run"], "--captions", world["caps"], "--out", world["caps"]),
            "--out", "also an input", "caps.txt")
    assert hashes(world["root"]) == before


def test_encode_out_empty_is_refused(world, capsys):
    refused(run(capsys, "encode", world["run"], "--captions", world["caps"], "--out", ""), "--out", "empty path")


def test_entailment_json_onto_its_own_train_file_is_refused(tmp_path, capsys):
    lines = "".join(json.dumps({"gold_label": g, "sentence1": "a b", "sentence2": "a"}) + "\n"
                    for g in ("entailment", "neutral", "contradiction"))
    files = {s: tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test")}
    for p in files.values():
        p.write_text(lines)
    before = hashes(tmp_path)
    refused(run(capsys, "entailment", *(x for s, p in files.items() for x in (f"--{s}-file", p)),
                "--save_dir", tmp_path / "runs", "--json", files["train"], "--quiet"), "--json", "also an input")
    assert hashes(tmp_path) == before


def test_hypernym_json_inside_its_own_run_folder_is_refused(tmp_path, capsys):
    (tmp_path / "wn").mkdir()
    refused(run(capsys, "hypernym", "--wordnet", tmp_path / "wn", "--save_dir", tmp_path, "--name", "run",
                "--json", tmp_path / "run" / "config.json", "--quiet"), "--json", "run folder")
    assert not (tmp_path / "run").exists()


def karpathy(n_images: int) -> dict:
    return {"images": [{"split": "train", "filename": f"{i}.jpg", "sentences": [{"tokens": ["a", f"w{i}"]}]}
                       for i in range(n_images)]}


def test_a_failed_prepare_leaves_the_data_folder_as_it_was(tmp_path, capsys):
    out = tmp_path / "d"
    (out / "images" / "10crop").mkdir(parents=True)
    (out / "train.txt").write_text("old caption\n" * 5)
    np.save(out / "images" / "10crop" / "train.npy", np.ones((5, 4), np.float32))
    (tmp_path / "dataset_x.json").write_text(json.dumps(karpathy(3)))
    before = hashes(out)
    refused(run(capsys, "prepare", tmp_path / "dataset_x.json", "--out", out, "--quiet"), "train.npy", "5 images")
    assert hashes(out) == before


def test_prepare_writes_every_split_file(tmp_path, capsys):
    (tmp_path / "dataset_x.json").write_text(json.dumps(karpathy(3)))
    assert run(capsys, "prepare", tmp_path / "dataset_x.json", "--out", tmp_path / "d", "--quiet").returncode == 0
    assert (tmp_path / "d" / "train.txt").read_text() == "a w0\na w1\na w2\n"
    assert (tmp_path / "d" / "train_images.txt").read_text() == "../0.jpg\n../1.jpg\n../2.jpg\n"
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.startswith(".")]  # no temporaries left


def test_outputs_take_the_users_umask(world, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        assert run(capsys, "encode", world["run"], "--features", world["feats"], "--out", tmp_path / "im.npy").returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "im.npy").stat().st_mode) == 0o644


def dead_pid() -> int:
    """The id of a process that has ended."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporaries_of_a_killed_writer_are_removed_at_the_next_write(world, tmp_path, capsys):
    pid = dead_pid()
    stale = [tmp_path / f".im.npy.{pid}.x1y2.tmp", tmp_path / f".im.npy.tmp-{pid}"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    keep = tmp_path / f".im.npy.{os.getpid()}.live.tmp"  # a writer that still runs keeps its temporary
    keep.write_bytes(b"x")
    assert run(capsys, "encode", world["run"], "--features", world["feats"], "--out", tmp_path / "im.npy").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["im.npy", keep.name])


SLOW_ENCODE = """
import sys, time
import order_embedding.inference as inference
def slow(*args, **kwargs):
    print("encoding", flush=True)
    time.sleep(120)
inference.encode_sentences = slow
from order_embedding.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_encode_with_one_line_and_no_temporary(world, tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ENCODE, "encode", str(world["run"]), "--captions",
                             str(world["caps"]), "--out", str(tmp_path / "s.npy")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert proc.stdout.readline() == "encoding\n"
        assert [p.name for p in tmp_path.iterdir()], "the encode has its temporary file open"
        proc.send_signal(signum)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    err = proc.stderr.read().strip()
    assert proc.returncode == 128 + signum, err
    last = err.splitlines()[-1]  # after the progress bar
    assert last.startswith("order-embedding encode: interrupted") and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_runs_of_the_same_folder_name_get_a_row_each(world, tmp_path, capsys):
    for parent in ("a", "b", "c"):
        shutil.copytree(world["run"], tmp_path / parent / "r")
    result = run(capsys, "evaluate", *(tmp_path / p / "r" for p in "abc"), "--data", world["data"], "--json",
                 tmp_path / "m.json")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "m.json").read_text())
    assert len(rows) == 3 and {r["run_dir"] for r in rows.values()} == {str(tmp_path / p / "r") for p in "abc"}
    assert len({json.dumps(r["t2i"]) for r in rows.values()}) == 1  # one model three times: one set of figures
