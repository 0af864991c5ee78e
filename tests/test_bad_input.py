"""Bad input at every boundary: one line naming the option or file, a non-zero exit, nothing damaged.

Each case goes through the command line (in process through ``main``, or as a subprocess where
the process itself matters: tracebacks, a real full disk) or through the Python API.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_FLAGS as TINY
from conftest import train_tiny_run, write_tiny_dataset

from order_embedding import inference as api
from order_embedding import legacy, options, runs, train
from order_embedding.cli import main
from order_embedding.data.splits import InputWarning

SRC = str(Path(__file__).resolve().parents[1] / "src")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, argv: list[str], *needles: str, code: int = 2) -> str:
    """Run the CLI in process; it must exit ``code`` with one stderr line holding every needle."""
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def cli(*argv: str, cwd: Path | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([*prefix, sys.executable, "-m", "order_embedding", *argv], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny data set and one trained run (order model), shared by the cases that only read them."""
    root = tmp_path_factory.mktemp("world")
    data, run = train_tiny_run(root, max_epochs=2)
    return root, data, run


@pytest.fixture
def run_copy(world, tmp_path):
    """A copy of the trained run that a case may damage."""
    return Path(shutil.copytree(world[2], tmp_path / "r"))


# ---------------------------------------------------------------- silently wrong answers


def test_nan_weights_are_refused_naming_the_tensor(run_copy, capsys):
    tensors, meta = runs.load_tensors(run_copy / runs.BEST)
    tensors["image.fc.weight"][0, 0] = float("nan")
    runs.save_tensors(run_copy / runs.BEST, tensors, meta)
    before = snapshot(run_copy)
    one_line(capsys, ["evaluate", str(run_copy), "--split", "test"], "image.fc.weight", "NaN")
    with pytest.raises(runs.RunError, match="image.fc.weight holds NaN"):
        api.load_model(run_copy)
    assert snapshot(run_copy) == before


def write_py3_snapshot(folder: Path, arrays_change=None) -> Path:
    """An original-format snapshot that Python 3 wrote with protocol 2 (its bytes go through _codecs.encode)."""
    n_words, dw, d, di = 5, 3, 4, 6
    options_ = {"n_words": n_words, "dim_word": dw, "dim": d, "dim_image": di, "method": "order", "abs": True,
                "encoder": "gru", "margin": 0.05}
    worddict = OrderedDict([(b"caf\xc3\xa9", 2), (b"dog", 3), (b"red", 4)])
    data = pickle.dumps({"options": options_, "worddict": worddict}, protocol=2)
    assert b"_codecs" in data
    rng = np.random.default_rng(0)
    shapes = {"Wemb": (n_words, dw), "encoder_W": (dw, 2 * d), "encoder_b": (2 * d,), "encoder_U": (d, 2 * d),
              "encoder_Wx": (dw, d), "encoder_bx": (d,), "encoder_Ux": (d, d), "ff_image_W": (di, d), "ff_image_b": (d,)}
    arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    if arrays_change:
        arrays_change(arrays)
    (folder / "snap.pkl").write_bytes(data)
    np.savez(folder / "snap.npz", **arrays)
    return folder / "snap"


def test_legacy_protocol2_bytes_accepted_and_nan_arrays_refused(tmp_path, capsys):
    prefix = write_py3_snapshot(tmp_path)
    assert main(["convert-legacy", str(prefix), str(tmp_path / "conv")]) == 0
    capsys.readouterr()
    model = api.load_model(tmp_path / "conv")
    assert model.vocab.words == ["café", "dog", "red"]  # UTF-8 byte words decoded as the original read them
    bad = tmp_path / "bad"
    bad.mkdir()
    prefix = write_py3_snapshot(bad, lambda a: a["encoder_Ux"].__setitem__((1, 2), np.inf))
    one_line(capsys, ["convert-legacy", str(prefix), str(tmp_path / "conv2")], "encoder_Ux", "NaN or infinite")
    assert not (tmp_path / "conv2").exists()

    class Rot13:
        def __reduce__(self):
            import codecs
            return codecs.encode, ("text", "rot13")

    for payload in (Rot13(), ):
        with pytest.raises(legacy.UnsafePickleError, match="_codecs.encode"):
            legacy.safe_loads(pickle.dumps(payload, protocol=2), "p.pkl")
    with pytest.raises(legacy.UnsafePickleError, match="os.system"):
        legacy.safe_loads(b"cos\nsystem\n(S'true'\ntR.", "p.pkl")


def test_count_options_are_positive_integers(world, tmp_path, capsys):
    _, data, run = world
    caps = tmp_path / "caps.txt"
    caps.write_text("a red round thing\n")
    out = tmp_path / "s.npy"
    for bad in ("-1", "0", "2.5", "x"):
        one_line(capsys, ["encode", str(run), "--captions", str(caps), "--out", str(out), "--batch-size", bad],
                 "--batch-size")
    assert not out.exists()
    one_line(capsys, ["index", "search", str(tmp_path), "a dog", "-k", "0"], "-k", "at least 1")
    one_line(capsys, ["hypernym", "--epochs", "0"], "--epochs")
    one_line(capsys, ["extract-features", str(data), "--workers", "-2"], "--workers")
    model = api.load_model(run, device="cpu")
    for bad in (-1, 0, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            api.encode_sentences(model, ["a red dog"], batch_size=bad)
        with pytest.raises(ValueError, match="batch_size"):
            api.encode_images(model, np.eye(2, 16, dtype=np.float32), batch_size=bad)


@pytest.mark.parametrize("flag,value,needle", [
    ("--dim", "8.5", "whole number"), ("--lrate", "abc", "number"), ("--lrate", "0", "greater than 0"),
    ("--margin", "abc", "number"), ("--margin", "-0.1", "at least 0"), ("--grad_clip", "nan", "finite"),
    ("--device", "tpu", "not a torch device"), ("--abs", "maybe", "true or false"),
    ("--name", "../../x", "plain name"), ("--cnn", "../..", "plain name"), ("--optimizer", "sgd", "adam_original"),
    ("--lr_update", "0", "at least 1"), ("--batch_size", "1", "at least 2"), ("--backbone_options", "xyz", "JSON"),
])
def test_train_flags_parse_by_their_rule(world, tmp_path, capsys, flag, value, needle):
    _, data, _ = world
    one_line(capsys, ["train", "--data", str(data), "--save_dir", str(tmp_path / "runs"), flag, value, "--quiet"],
             f"argument {flag}", needle)
    assert not (tmp_path / "runs").exists()


def test_missing_cuda_device_refused(world, tmp_path, capsys):
    index = torch.cuda.device_count() if torch.cuda.is_available() else 0
    one_line(capsys, ["train", "--data", str(world[1]), "--device", f"cuda:{index}", "--quiet"], "does not exist")
    one_line(capsys, ["encode", str(world[2]), "--captions", "x", "--out", "y", "--device", f"cuda:{index}"],
             "--device")


def test_booleans_parse_once_for_cli_and_api():
    for text, value in (("False", False), ("no", False), ("0", False), ("TRUE", True), ("yes", True), ("1", True)):
        assert options.make_options("order", abs=text, max_violation=text)["abs"] is value
    assert train.make_options("order", abs=False)["abs"] is False
    for bad in ("False!", "", 1, None, "on"):
        with pytest.raises(ValueError, match="abs must be true or false"):
            train.make_options("order", abs=bad)
    assert train.make_options("order", dim="16")["dim"] == 16
    with pytest.raises(ValueError, match="dim must be a whole number"):
        train.make_options("order", dim=16.0)


def test_string_sentences_and_bom_and_unnormalised_rows(world, tmp_path, capsys):
    _, _, run = world
    model = api.load_model(run, device="cpu")
    with pytest.raises(TypeError, match="list of strings"):
        api.encode_sentences(model, "a red dog")
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_bytes(b"red round thing\n")
    bom.write_bytes(b"\xef\xbb\xbfred round thing\n")
    for path in (plain, bom):
        assert main(["encode", str(run), "--captions", str(path), "--out", str(tmp_path / f"{path.stem}.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), np.load(tmp_path / "bom.npy"))
    capsys.readouterr()
    raw = tmp_path / "raw.npy"
    np.save(raw, np.arange(32, dtype=np.int64).reshape(2, 16))  # integer rows, norms far from 1
    assert main(["encode", str(run), "--features", str(raw), "--out", str(tmp_path / "o.npy")]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning == [f"order-embedding: warning: {raw}: 2 of 2 feature rows are not L2-normalised; "
                       "the model expects unit rows (as extract-features writes them)"]
    unit = np.eye(3, 16, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        api.encode_images(model, unit)  # unit rows: no warning
        with pytest.raises(InputWarning, match="1 of 3"):
            api.encode_images(model, unit * np.array([[1], [1], [2]], np.float32))


@pytest.mark.parametrize("change,needle", [
    (lambda c, v: c["model"].update(dim=8.5), "dim must be a whole number, got 8.5"),
    (lambda c, v: c["model"].update(abs="false"), "abs must be true or false"),
    (lambda c, v: c["model"].update(backbone_options="xyz"), "backbone_options must be a JSON object"),
    (lambda c, v: c.update(train="xyz"), "'train' section"),
    (lambda c, v: v["words"].extend(["extra1", "extra2"]), "vocab.json"),
])
def test_run_folder_validated_when_loaded(run_copy, capsys, change, needle):
    cfg = json.loads((run_copy / runs.CONFIG).read_text())
    vocab = json.loads((run_copy / runs.VOCAB).read_text())
    change(cfg, vocab)
    (run_copy / runs.CONFIG).write_text(json.dumps(cfg))
    (run_copy / runs.VOCAB).write_text(json.dumps(vocab))
    one_line(capsys, ["evaluate", str(run_copy), "--split", "test"], needle)
    with pytest.raises(runs.RunError, match=needle.split(" ")[0]):
        api.load_model(run_copy)


def test_integer_weights_refused(run_copy):
    tensors, meta = runs.load_tensors(run_copy / runs.BEST)
    tensors["image.fc.bias"] = tensors["image.fc.bias"].to(torch.int64)
    runs.save_tensors(run_copy / runs.BEST, tensors, meta)
    with pytest.raises(runs.RunError, match="image.fc.bias has dtype torch.int64"):
        api.load_model(run_copy)


# ---------------------------------------------------------------- run folders


def test_killed_before_first_checkpoint_evaluates_plainly_and_resumes(world, tmp_path, capsys):
    _, data, _ = world
    save = tmp_path / "runs"
    argv = ["train", "--data", str(data), "--save_dir", str(save), "--name", "k", "--max_epochs", "1", *TINY]
    assert main(argv) == 0
    run = save / "k"
    reference = runs.load_tensors(run / runs.LAST)[0]
    for name in (runs.BEST, runs.LAST, runs.METRICS):  # as if killed right after config.json and vocab.json
        (run / name).unlink()
    one_line(capsys, ["evaluate", str(run)], "no checkpoint yet")
    one_line(capsys, argv, "already holds a run")
    assert main([*argv, "--resume", "true"]) == 0
    again = runs.load_tensors(run / runs.LAST)[0]
    for k in reference:
        torch.testing.assert_close(again[k], reference[k], rtol=0, atol=0, msg=k)


def test_second_writer_refused(world, tmp_path, capsys):
    _, data, _ = world
    lock = runs.lock_run(tmp_path / "runs" / "busy")
    try:
        one_line(capsys, ["train", "--data", str(data), "--save_dir", str(tmp_path / "runs"), "--name", "busy", *TINY],
                 "another process is writing", ".lock")
    finally:
        lock.close()
    assert [p.name for p in (tmp_path / "runs" / "busy").iterdir()] == [runs.LOCK]


def test_two_processes_one_run_folder_and_lock_released_by_a_crash(world, tmp_path):
    _, data, _ = world
    argv = ["train", "--data", str(data), "--save_dir", str(tmp_path), "--name", "twice", "--max_epochs", "200", *TINY]
    first = subprocess.Popen([sys.executable, "-m", "order_embedding", *argv], env={**os.environ, "PYTHONPATH": SRC},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "twice" / runs.METRICS).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)  # the first process holds the lock and is training
        assert first.poll() is None, "the first run ended before the second started"
        second = cli(*argv)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "another process is writing" in second.stderr
    finally:
        first.kill()  # a crash: the operating system releases the lock
        first.wait(timeout=60)
    third = cli(*argv[:-len(TINY)], "--max_epochs", "1", "--resume", "true", *TINY)
    assert third.returncode == 0 and "another process" not in third.stderr, third.stderr


def test_resume_with_other_options_refused_and_others_recorded(world, tmp_path, capsys):
    _, data, _ = world
    save = tmp_path / "runs"
    base = ["train", "--data", str(data), "--save_dir", str(save), "--name", "o"]
    assert main([*base, "--max_epochs", "1", *TINY]) == 0
    run = save / "o"
    before = snapshot(run)
    changed = [a if a != "16" or i != TINY.index("--batch_size") + 1 else "8" for i, a in enumerate(TINY)]
    one_line(capsys, [*base, "--max_epochs", "2", "--resume", "yes", *changed], "trained with batch_size 16, not 8")
    one_line(capsys, [*base, "--max_epochs", "2", "--resume", "yes", "--dim", "10", *TINY[2:]], "dim 12, not 10")
    assert snapshot(run) == before
    assert main([*base, "--max_epochs", "2", "--resume", "yes", *TINY]) == 0
    assert json.loads((run / runs.CONFIG).read_text())["train"]["max_epochs"] == 2
    cfg = json.loads((run / runs.CONFIG).read_text())
    del cfg["train"]["optimizer"]  # a run folder from before the option: it was trained with textbook Adam
    (run / runs.CONFIG).write_text(json.dumps(cfg))
    one_line(capsys, [*base, "--max_epochs", "3", "--resume", "yes", *TINY], "optimizer 'adam', not 'adam_original'")


def test_checkpoint_without_metadata_is_one_line(run_copy, world, capsys):
    tensors, _ = runs.load_tensors(run_copy / runs.LAST)
    runs.save_tensors(run_copy / runs.LAST, tensors)
    one_line(capsys, ["train", "--data", str(world[1]), "--save_dir", str(run_copy.parent), "--name", run_copy.name,
                      "--max_epochs", "3", "--resume", "true", *TINY], "last.safetensors", "no training state")


def test_data_folder_found_from_anywhere_and_after_a_move(tmp_path, monkeypatch, capsys):
    project = tmp_path / "checkout"
    write_tiny_dataset(project / "demo" / "data")
    monkeypatch.chdir(project)
    assert main(["train", "--data", "demo/data", "--save_dir", "runs", "--name", "d", "--max_epochs", "1", *TINY]) == 0
    recorded = json.loads((project / "runs" / "d" / runs.CONFIG).read_text())["train"]
    assert recorded["data_given"] == "demo/data" and Path(recorded["data"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(project / "runs" / "d"), "--split", "test"]) == 0
    moved = tmp_path / "moved"
    project.rename(moved)
    assert main(["evaluate", str(moved / "runs" / "d"), "--split", "test"]) == 0
    out = tmp_path / "index"
    assert main(["index", "build", str(moved / "runs" / "d"), "--split", "test", "--out", str(out)]) == 0
    capsys.readouterr()


def test_full_disk_on_checkpoint_is_one_line_and_leaves_nothing(world, tmp_path, monkeypatch, capsys):
    _, data, _ = world
    real_fsync = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", full)
    one_line(capsys, ["train", "--data", str(data), "--save_dir", str(tmp_path), "--name", "f", "--max_epochs", "1",
                      *TINY], "no space left", "bytes", "vocab.json", code=1)
    assert not list(tmp_path.rglob("*.tmp"))


def test_full_tmpfs_encode_is_one_line(world, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {mount}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (unshare -rm refused)")
    caps = tmp_path / "caps.txt"
    caps.write_text("a red round thing\n" * 2000)
    env = f"PYTHONPATH={SRC}"
    script = (f"mount -t tmpfs -o size=16k tmpfs {mount} && env {env} {sys.executable} -m order_embedding encode "
              f"{world[2]} --captions {caps} --out {mount}/s.npy; rc=$?; ls -A {mount}; exit $rc")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == ""  # nothing partial left on the full disk
    errors = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]  # progress bars aside
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith(f"order-embedding encode: error: {mount}/s.npy: no space left on the device "
                                f"(writing {2000 * 12 * 4 + 128:,} bytes"), errors[0]  # 12-d float32 rows, header


def test_stray_temporaries_and_duplicate_metrics_after_resume(world, tmp_path):
    _, data, _ = world
    opts = dict(data=str(data), save_dir=str(tmp_path), name="m", dim=12, dim_word=8, dim_image=16, batch_size=16,
                validFreq=4, dispFreq=1, verbose=False)
    run = train.trainer("order", max_epochs=1, **opts)
    last_uidx = runs.load_tensors(run / runs.LAST)[1]["state"]["uidx"]
    # as if killed after logging two more updates and in the middle of writing a checkpoint
    for uidx in (last_uidx + 1, last_uidx + 2):
        runs.append_metrics(run, {"event": "train", "loss": 1.0, "uidx": uidx, "epoch": 1, "examples": 0, "time": 0})
    with open(run / runs.METRICS, "a") as f:
        f.write('{"event": "train", "uidx": ')  # and in the middle of the next record
    (run / ".last.safetensors.abc123.tmp").write_bytes(b"partial")
    train.trainer("order", max_epochs=2, resume=True, **opts)
    assert not list(run.glob("*.tmp"))
    keys = [(r["event"], r["uidx"]) for r in runs.read_metrics(run)]
    assert len(keys) == len(set(keys)) and max(u for _, u in keys) > last_uidx + 2
    assert all(json.loads(line) for line in (run / runs.METRICS).read_text().splitlines())  # every line whole


def test_training_state_is_checked_when_restored():
    good = train.TrainState(uidx=3, epoch=1, batch=0, examples=48, best_score=12.5, rng={"state": 1})
    assert train.TrainState.from_dict(json.loads(json.dumps(good.to_dict())), "x") == good
    for bad in ({**good.to_dict(), "uidx": -1}, {**good.to_dict(), "epoch": 1.5}, {"uidx": 3},
                {**good.to_dict(), "extra": 0}, "state"):
        with pytest.raises(runs.RunError, match="training state"):
            train.TrainState.from_dict(bad, "x")


def test_no_traceback_from_a_subprocess(world, tmp_path):
    result = cli("train", "--abs", "False", "--dim", "8.5", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "order-embedding train: error: argument --dim: must be a whole number, got '8.5' "
        "(see order-embedding train --help)"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["train", "hypernym", "entailment", "demo"])
def test_seed_beyond_what_torch_and_numpy_take_is_refused(command, tmp_path):
    result = cli(command, "--seed", str(2**64), "--quiet", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"order-embedding {command}: error: argument --seed: must be a whole number at most {2**32 - 1}, "
        f"got {2**64} (see order-embedding {command} --help)"]
    assert list(tmp_path.iterdir()) == []


def test_the_largest_seed_is_taken_by_every_seeding_function():
    largest = options.seed(2**32 - 1)
    assert torch.Generator().manual_seed(largest).initial_seed() == largest
    assert np.random.SeedSequence(largest).entropy == largest
    np.random.RandomState(largest)  # the narrowest: NumPy's legacy generator refuses 2**32
    with pytest.raises(options.OptionError, match="seed must be a whole number at most"):
        options.seed(2**32)
