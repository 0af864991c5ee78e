"""``order-embedding entailment`` end to end: the quick generated-corpus run, its outputs and the Python API,
and bad input refused in one line with nothing left in the run folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from order_embedding import runs
from order_embedding.cli import main
from order_embedding.entailment import (
    entailment_errors,
    load_entailment,
    predict_entailment,
)


@pytest.mark.slow
def test_quick_run_beats_the_baselines_and_can_be_loaded(tmp_path, capsys) -> None:
    out = tmp_path / "results.json"
    assert main(["entailment", "--quick", "--save_dir", str(tmp_path), "--name", "q", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "order-embeddings" in printed and "oracle %" in printed and "word overlap" in printed
    r = json.loads(out.read_text())
    assert set(r) == {"data", "pairs", "seconds", "models"}
    assert set(r["pairs"]) == {"train", "dev", "test", "dropped"} and r["pairs"]["dropped"] == 0
    assert set(r["models"]) == {"order", "symmetric", "majority", "word_overlap"}
    for m in r["models"].values():
        assert set(m) == {"dev_accuracy", "test_accuracy", "oracle_test_accuracy", "threshold"}
        assert m["oracle_test_accuracy"] >= m["test_accuracy"] - 1e-9
    order = r["models"]["order"]["test_accuracy"]
    assert order >= 72
    for other in ("symmetric", "majority", "word_overlap"):
        assert order > r["models"][other]["test_accuracy"] + 5, other

    run = tmp_path / "q"
    config = runs.load_json(run / runs.CONFIG)
    assert config["kind"] == "entailment" and set(config["train"]) == {"order", "symmetric"}
    records = list(runs.read_metrics(run))
    valid = [x for x in records if x["event"] == "valid"]
    assert {x["model"] for x in valid} == {"order", "symmetric"}
    assert all(set(x) >= {"uidx", "epoch", "examples", "dev_accuracy", "threshold", "best", "time"} for x in valid)
    assert any(x["event"] == "train" and "loss" in x for x in records)
    best_order = max(x["dev_accuracy"] for x in valid if x["model"] == "order")
    assert best_order == pytest.approx(r["models"]["order"]["dev_accuracy"])

    # the saved model gives the same test errors and accuracy through the Python API
    model = load_entailment(run)
    test = [json.loads(line) for line in (run / "corpus" / "snli_1.0_test.jsonl").read_text().splitlines()]
    premises, hypotheses = [t["sentence1"] for t in test], [t["sentence2"] for t in test]
    gold = np.array([t["gold_label"] == "entailment" for t in test])
    assert model.threshold == pytest.approx(r["models"]["order"]["threshold"])
    errors = entailment_errors(model, premises, hypotheses)
    assert errors.shape == (len(test),) and (errors >= 0).all()
    accuracy = 100 * np.mean(predict_entailment(model, premises, hypotheses) == gold)
    assert accuracy == pytest.approx(r["models"]["order"]["test_accuracy"], abs=1e-6)


def _snli_dir(tmp_path, test_text: str):
    d = tmp_path / "snli"
    d.mkdir()
    good = "".join(json.dumps({"gold_label": g, "sentence1": "A dog runs.", "sentence2": "An animal moves."}) + "\n"
                   for g in ("entailment", "neutral", "contradiction"))
    (d / "snli_1.0_train.jsonl").write_text(good)
    (d / "snli_1.0_dev.jsonl").write_text(good)
    (d / "snli_1.0_test.jsonl").write_bytes(test_text.encode() if isinstance(test_text, str) else test_text)
    return d


@pytest.mark.parametrize("test_text, message", [
    ('{"gold_label": "entailment", "sentence1": "a"}\n', "snli_1.0_test.jsonl:1: missing field(s) sentence2"),
    ("entailment\ta\tb\nwhatever\ta\tb\n", "snli_1.0_test.jsonl:2: unknown label 'whatever'"),
    (b"entailment\ta\tb\nneutral\t\xff\tb\n", "snli_1.0_test.jsonl:2: not UTF-8 text"),
])
def test_bad_data_is_one_line_and_leaves_no_run(tmp_path, capsys, test_text, message) -> None:
    d = _snli_dir(tmp_path, test_text)
    assert main(["entailment", "--snli", str(d), "--save_dir", str(tmp_path / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_missing_split_and_bad_options_are_one_line(tmp_path, capsys) -> None:
    d = _snli_dir(tmp_path, "")
    (d / "snli_1.0_test.jsonl").unlink()
    assert main(["entailment", "--snli", str(d), "--save_dir", str(tmp_path / "runs")]) == 2
    assert "no test file (looked for snli_1.0_test.jsonl" in capsys.readouterr().err
    assert main(["entailment", "--quick", "--batch_size", "1", "--save_dir", str(tmp_path / "runs")]) == 2
    assert "--batch_size/--batch-size: must be a whole number at least 2" in capsys.readouterr().err
    assert main(["entailment", "--snli", str(d), "--quick"]) == 2
    assert "--quick and --scenes are for the generated corpus" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_existing_run_is_refused(tmp_path, capsys) -> None:
    run = tmp_path / "entailment"
    run.mkdir()
    runs.save_json(run / runs.CONFIG, {"kind": "entailment"})
    assert main(["entailment", "--quick", "--save_dir", str(tmp_path)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [runs.CONFIG]


def test_help_describes_every_option(capsys) -> None:
    assert main(["entailment", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--dim ", "--dim_word", "--margin", "--max_epochs", "--batch_size", "--lrate", "--validFreq",
                 "--grad_clip", "--optimizer", "--save_dir", "--name", "--seed", "--snli", "--json", "--quick"):
        assert flag in text, flag
    flat = " ".join(text.split())
    assert "default 1024 (section 9), 128 on the generated corpus" in flat and "default 15 (section 9)" in flat


def test_an_snli_tab_folder_runs_end_to_end_with_small_settings(tmp_path, capsys) -> None:
    d = tmp_path / "snli_1.0"
    d.mkdir()
    header = "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t" \
             "sentence1\tsentence2\tcaptionID\tpairID"
    rows = [f"{g}\tx\tx\tx\tx\tA {c} dog runs.\tA dog {v}.\t1\t{k}"
            for k, (g, c, v) in enumerate([("entailment", "big", "runs"), ("contradiction", "small", "sleeps"),
                                           ("neutral", "red", "runs fast"), ("-", "tan", "runs")] * 6)]
    for split in ("train", "dev", "test"):
        (d / f"snli_1.0_{split}.txt").write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "r.json"
    args = ["entailment", "--snli", str(d), "--dim", "8", "--dim_word", "4", "--batch_size", "6", "--max_epochs", "2",
            "--validFreq", "2", "--save_dir", str(tmp_path / "runs"), "--json", str(out), "--quiet"]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["data"] == str(d.resolve())
    assert r["pairs"] == {"train": 18, "dev": 18, "test": 18, "dropped": 18}
    config = runs.load_json(tmp_path / "runs" / "entailment" / runs.CONFIG)
    assert config["train"]["order"]["dim"] == 8 and config["train"]["order"]["lrate"] == 0.001
    assert config["data"]["train_file"].endswith("snli_1.0_train.txt")
    assert runs.load_json(tmp_path / "runs" / "entailment" / runs.VOCAB)["words"][:2] == ["A", "dog"]  # case kept
    assert "order-embeddings" in capsys.readouterr().out
