"""The shared training loop: hypernym and entailment runs interrupted at any update and resumed end with the
parameters and results of an uninterrupted run; a NaN loss stops any experiment with one line."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_ENTAILMENT, write_tiny_snli
from wordnet_files import TINY, write_wordnet

from order_embedding import loop, runs
from order_embedding.cli import main
from order_embedding.entailment import experiment as entailment
from order_embedding.entailment import read_snli
from order_embedding.hypernym import experiment as hypernym
from order_embedding.hypernym.wordnet import build_dataset, read_wordnet


def _same_tensors(a: Path, b: Path) -> None:
    ta, _ = runs.load_tensors(a)
    tb, _ = runs.load_tensors(b)
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _without_seconds(d):
    if isinstance(d, dict):
        return {k: _without_seconds(v) for k, v in d.items() if k != "seconds"}
    return d


def _metrics(run: Path) -> list[dict]:
    """The records without their clock fields, in order."""
    return [{k: v for k, v in r.items() if k not in ("time", "seconds")} for r in runs.read_metrics(run)]


class Interrupt(Exception):
    """Stands for a kill at a chosen update."""


def _interrupt_at(monkeypatch, module, name: str, call: int) -> None:
    real = getattr(module, name)
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.fixture
def tiny_wordnet(tmp_path):
    write_wordnet(tmp_path / "wn", TINY)
    return build_dataset(read_wordnet(tmp_path / "wn"), seed=0, dev_size=3, test_size=3)


def _hypernym_configs():
    # 10 training edges + 10 negatives in batches of 3: 7 updates an epoch, validated every 4 and at each epoch's end
    return [hypernym.HypernymConfig(method=m, dim=4, max_epochs=3, batch_size=3, validFreq=4, lr_decay=True)
            for m in ("order", "cosine")]


@pytest.mark.parametrize("call", [3, 6, 9, 20, 26, 40])  # mid-epoch, just after a checkpoint, in the second model
def test_hypernym_resumed_after_an_interruption_equals_an_uninterrupted_run(tiny_wordnet, tmp_path, monkeypatch, call):
    whole = hypernym.run_experiment(tiny_wordnet, _hypernym_configs(), run_dir=tmp_path / "whole", progress=False)
    _interrupt_at(monkeypatch, hypernym, "apply_rows", call)
    with pytest.raises(Interrupt):
        hypernym.run_experiment(tiny_wordnet, _hypernym_configs(), run_dir=tmp_path / "part", progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="already holds a run"):  # refused without resume
        hypernym.run_experiment(tiny_wordnet, _hypernym_configs(), run_dir=tmp_path / "part", progress=False)
    part = hypernym.run_experiment(tiny_wordnet, _hypernym_configs(), run_dir=tmp_path / "part", progress=False,
                                   resume=True)
    assert _without_seconds(part) == _without_seconds(whole)
    for name in (runs.BEST, "last.order.safetensors", "last.symmetric.safetensors"):
        _same_tensors(tmp_path / "whole" / name, tmp_path / "part" / name)
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "whole")
    assert _metrics(tmp_path / "whole")[-1]["event"] == "finished"


@pytest.mark.parametrize("seconds", [math.inf, 0.0])
def test_checkpoints_at_each_epoch_end_and_validations_no_more_often_than_the_interval(
        tiny_wordnet, tmp_path, monkeypatch, seconds):
    monkeypatch.setattr(hypernym, "CHECKPOINT_SECONDS", seconds)
    written = []
    real = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda path, trainee, state: (written.append(state.uidx),
                                                                                 real(path, trainee, state)))
    hypernym.run_experiment(tiny_wordnet, _hypernym_configs()[:1], run_dir=tmp_path / "r", progress=False)
    per_epoch = math.ceil(2 * len(tiny_wordnet.train) / 3)  # one negative per edge, batches of 3
    epoch_ends = {per_epoch * e for e in (1, 2, 3)}
    validations = set(range(4, 3 * per_epoch + 1, 4)) | epoch_ends  # validFreq 4
    assert written == sorted(epoch_ends if seconds == math.inf else validations)


def test_hypernym_resume_refuses_other_settings(tiny_wordnet, tmp_path):
    hypernym.run_experiment(tiny_wordnet, _hypernym_configs(), run_dir=tmp_path / "r", progress=False)
    other = [hypernym.HypernymConfig(method="order", dim=5, max_epochs=3, batch_size=3, validFreq=4)]
    with pytest.raises(ValueError, match="other 'model' settings"):
        hypernym.run_experiment(tiny_wordnet, other, run_dir=tmp_path / "r", progress=False, resume=True)


def _move_checkpoint_state(path: Path, **state) -> None:
    """Rewrite the training state recorded in a checkpoint's metadata (the tensors stay)."""
    tensors, meta = runs.load_tensors(path)
    runs.save_tensors(path, tensors, {**meta, "state": {**meta["state"], **state}})


def _one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_hypernym_resume_refuses_a_state_beyond_the_config(tmp_path, capsys):
    write_wordnet(tmp_path / "wn", TINY)
    args = ["hypernym", "--wordnet", str(tmp_path / "wn"), "--dev-size", "3", "--test-size", "3", "--dim", "4",
            "--max_epochs", "2", "--batch_size", "3", "--validFreq", "4", "--save_dir", str(tmp_path), "--name", "h",
            "--quiet"]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0  # the run as written resumes (at its end)
    checkpoint = tmp_path / "h" / "last.order.safetensors"
    _move_checkpoint_state(checkpoint, epoch=10**6)
    err = _one_error_line(capsys, [*args, "--resume"])
    assert f"{checkpoint}: the training state has epoch 1000000, more than the 2" in err
    _move_checkpoint_state(checkpoint, epoch=2, uidx=10**6)
    assert "has uidx 1000000" in _one_error_line(capsys, [*args, "--resume"])




@pytest.mark.parametrize("call", [2, 4, 7, 16])  # 4 updates an epoch; the symmetric model starts at update 13
def test_entailment_resumed_after_an_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, call):
    data = read_snli(write_tiny_snli(tmp_path))
    whole = entailment.run_experiment(data, TINY_ENTAILMENT, tmp_path / "whole", "t", progress=False)
    _interrupt_at(monkeypatch, entailment, "clip_gradients", call)
    with pytest.raises(Interrupt):
        entailment.run_experiment(data, TINY_ENTAILMENT, tmp_path / "part", "t", progress=False)
    monkeypatch.undo()
    part = entailment.run_experiment(data, TINY_ENTAILMENT, tmp_path / "part", "t", progress=False, resume=True)
    assert _without_seconds(part) == _without_seconds(whole)
    for name in (runs.BEST, "last.order.safetensors", "last.symmetric.safetensors"):
        _same_tensors(tmp_path / "whole" / name, tmp_path / "part" / name)
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "whole")


def test_entailment_cli_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    args = ["entailment", "--snli", str(write_tiny_snli(tmp_path)), "--dim", "8", "--dim_word", "4", "--batch_size", "4",
            "--max_epochs", "2", "--validFreq", "3", "--save_dir", str(tmp_path), "--name", "e", "--quiet"]
    _interrupt_at(monkeypatch, entailment, "clip_gradients", 5)
    with pytest.raises(Interrupt):
        main(args)
    monkeypatch.undo()
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert runs.load_json(tmp_path / "e" / "results.json")["models"]["order"]["updates"] == 8


def test_entailment_resume_refuses_a_state_beyond_the_config(tmp_path, capsys):
    args = ["entailment", "--snli", str(write_tiny_snli(tmp_path)), "--dim", "8", "--dim_word", "4", "--batch_size", "4",
            "--max_epochs", "2", "--validFreq", "3", "--save_dir", str(tmp_path), "--name", "e", "--quiet"]
    assert main(args) == 0
    assert main([*args, "--resume"]) == 0  # the run as written resumes (at its end)
    checkpoint = tmp_path / "e" / "last.order.safetensors"
    _move_checkpoint_state(checkpoint, batch=5)  # 18 pairs in batches of 4: 4 batches an epoch
    assert f"{checkpoint}: the training state has batch 5, more than the 4" in _one_error_line(capsys, [*args, "--resume"])


def test_train_state_reads_checkpoints_written_before_its_newer_fields():
    old = {"uidx": 3, "epoch": 1, "batch": 0, "examples": 48, "best_score": 12.5, "rng": {"state": 1}}
    state = loop.TrainState.from_dict(old, "x")
    assert (state.uidx, state.best_uidx, state.seconds, state.loss_count) == (3, 0, 0.0, 0)
    with pytest.raises(runs.RunError, match="malformed"):
        loop.TrainState.from_dict({**old, "best_uidx": 2.5}, "x")


def test_nan_loss_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys):
    write_wordnet(tmp_path / "wn", TINY)
    real = hypernym.pair_hinge_loss
    count = {"n": 0}

    def poisoned(*args, **kwargs):
        count["n"] += 1
        loss = real(*args, **kwargs)
        return loss * math.nan if count["n"] == 5 else loss

    monkeypatch.setattr(hypernym, "pair_hinge_loss", poisoned)
    monkeypatch.setattr(hypernym, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint at every validation
    assert main(["hypernym", "--wordnet", str(tmp_path / "wn"), "--dev-size", "3", "--test-size", "3",
                 "--dim", "4", "--batch-size", "3", "--validFreq", "2", "--save_dir", str(tmp_path), "--name", "h",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "order model: loss became nan at update 5" in err and str(tmp_path / "h") in err
    # the run folder holds the checkpoint of update 4, with finite parameters
    tensors, meta = runs.load_tensors(tmp_path / "h" / "last.order.safetensors")
    assert meta["state"]["uidx"] == 4 and np.isfinite(tensors["model.weight"].numpy()).all()


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_the_metrics_records_figures(tiny_wordnet, tmp_path):
    pytest.importorskip("tensorboard")
    hypernym.run_experiment(tiny_wordnet, _hypernym_configs(), run_dir=tmp_path / "r", progress=False,
                            tensorboard=tmp_path / "tb")
    scalars = _tensorboard_scalars(tmp_path / "tb")
    for model in ("order", "symmetric"):
        records = [r for r in runs.read_metrics(tmp_path / "r") if r.get("model") == model]
        for event, key in (("train", "loss"), ("valid", "dev_accuracy"), ("valid", "threshold")):
            logged = [(r["uidx"], r[key]) for r in records if r["event"] == event]
            assert len(logged) > 1
            assert scalars[f"{model}/{event}/{key}"] == [(u, pytest.approx(v, rel=1e-6)) for u, v in logged]


def test_train_writes_tensorboard_scalars(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    rc = main(["train", "--data", str(tiny_data), "--save_dir", str(tmp_path), "--name", "t", "--max-epochs", "2",
               "--dim", "8", "--dim-word", "6", "--dim-image", "16", "--batch-size", "8", "--valid-freq", "3",
               "--disp-freq", "1", "--tensorboard", str(tmp_path / "tb"), "--quiet"])
    assert rc == 0
    scalars = _tensorboard_scalars(tmp_path / "tb")
    records = list(runs.read_metrics(tmp_path / "t"))
    valid = [(r["uidx"], r["t2i"]["R@1"]) for r in records if r["event"] == "valid"]
    assert valid and scalars["valid/t2i/R@1"] == [(u, pytest.approx(v)) for u, v in valid]
    assert [u for u, _ in scalars["train/loss"]] == [r["uidx"] for r in records if r["event"] == "train"]
    assert records[-1]["event"] == "finished" and records[-1]["uidx"] == valid[-1][0]


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    write_wordnet(tmp_path / "wn", TINY)
    assert main(["hypernym", "--wordnet", str(tmp_path / "wn"), "--dev-size", "3", "--test-size", "3",
                 "--save_dir", str(tmp_path), "--name", "h", "--tensorboard", str(tmp_path / "tb"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs the tensorboard package" in err
    assert not (tmp_path / "h").exists()


def test_flags_have_one_spelling_across_the_commands(capsys):
    helps = {}
    for command in ("train", "hypernym", "entailment"):
        assert main([command, "--help"]) == 0
        helps[command] = capsys.readouterr().out
    for flag in ("--lrate", "--max_epochs", "--max-epochs", "--batch_size", "--batch-size", "--validFreq",
                 "--valid-freq", "--dim", "--margin", "--seed", "--save_dir", "--name", "--resume", "--tensorboard",
                 "--quiet"):
        for command, text in helps.items():
            assert flag in text, (command, flag)
    assert "--optimizer {adam,adam_original}" in helps["train"] and "{adam,adam_original}" in helps["entailment"]


def test_old_hypernym_spellings_work_with_a_notice(tiny_wordnet, tmp_path, capsys):
    write_wordnet(tmp_path / "wn", TINY)
    old = ["hypernym", "--wordnet", str(tmp_path / "wn"), "--dev-size", "3", "--test-size", "3", "--dim", "4",
           "--batch-size", "3", "--epochs", "2", "--lr", "0.05", "--valid-every", "4", "--out", str(tmp_path / "old"),
           "--json", str(tmp_path / "old.json"), "--quiet"]
    new = ["hypernym", "--wordnet", str(tmp_path / "wn"), "--dev_size", "3", "--test_size", "3", "--dim", "4",
           "--batch_size", "3", "--max_epochs", "2", "--lrate", "0.05", "--validFreq", "4", "--save_dir",
           str(tmp_path), "--name", "new", "--json", str(tmp_path / "new.json"), "--quiet"]
    assert main(old) == 0
    err = capsys.readouterr().err
    for flag, instead in (("--epochs", "--max_epochs"), ("--lr", "--lrate"), ("--valid-every", "--validFreq"),
                          ("--out", "--save_dir and --name")):
        assert f"{flag} is deprecated; use {instead}" in err
    assert main(new) == 0
    assert capsys.readouterr().err == ""
    a, b = json.loads((tmp_path / "old.json").read_text()), json.loads((tmp_path / "new.json").read_text())
    assert _without_seconds(a) == _without_seconds(b)
    assert runs.load_json(tmp_path / "new" / runs.CONFIG)["train"]["order"]["lrate"] == 0.05


def test_each_command_has_one_option_table(capsys):
    from order_embedding.options import option_table

    for command, declared in (("hypernym", hypernym.OPTIONS), ("entailment", entailment.OPTIONS)):
        table = option_table(declared)
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for o in declared:
            assert f"| `--{o.name}` |" in table and o.flags[0] in text
            assert " ".join(o.help.split()) in text  # --help shows the declared meaning
