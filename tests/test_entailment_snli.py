"""Readers of SNLI-style files, on small hand-made files of each format, and their one-line errors."""
from __future__ import annotations

import json

import pytest

from order_embedding.entailment import (
    EntailmentDataError,
    read_pairs,
    read_snli,
    tokenize,
)


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_tokenizer_is_treebank_style_and_keeps_case() -> None:
    assert tokenize('A man isn\'t "happy", (really).') == "A man is n't `` happy '' , ( really ) ."
    assert tokenize("Two dogs run.") == "Two dogs run ."


def test_snli_jsonl_drops_dash_labels_and_ignores_other_fields(tmp_path) -> None:
    p = write(tmp_path / "snli_1.0_dev.jsonl", jsonl(
        {"annotator_labels": ["neutral"], "captionID": "1", "gold_label": "neutral", "pairID": "1n",
         "sentence1": "A dog runs.", "sentence1_parse": "(ROOT ...)", "sentence2": "A dog runs fast."},
        {"gold_label": "-", "sentence1": "A cat.", "sentence2": "A pet."},
        {"gold_label": "entailment", "sentence1": "Kids don't sleep.", "sentence2": "Kids are awake."},
    ) + "\n")
    pairs = read_pairs(p)
    assert pairs.labels == ["neutral", "entailment"] and pairs.dropped == 1
    assert pairs.premises == ["A dog runs .", "Kids do n't sleep ."]
    assert pairs.hypotheses == ["A dog runs fast .", "Kids are awake ."]
    assert pairs.entailed() == [False, True]


def test_multinli_jsonl_reads_the_same_fields(tmp_path) -> None:
    p = write(tmp_path / "multinli_1.0_dev_matched.jsonl", jsonl(
        {"genre": "fiction", "gold_label": "contradiction", "promptID": 7, "sentence1": "He left.",
         "sentence2": "He stayed.", "sentence1_binary_parse": "( He left )"}))
    pairs = read_pairs(p)
    assert (pairs.labels, pairs.premises, pairs.hypotheses) == (["contradiction"], ["He left ."], ["He stayed ."])


def test_snli_tab_txt_uses_the_header_row(tmp_path) -> None:
    header = "gold_label\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\t" \
             "sentence1\tsentence2\tcaptionID\tpairID\tlabel1"
    rows = ["entailment\t( A b )\t( c )\t(ROOT)\t(ROOT)\tA woman sings.\tSomeone sings.\t3\t3e\tentailment",
            "-\tx\tx\tx\tx\tA boy.\tA girl.\t4\t4c\tneutral",
            "contradiction\tx\tx\tx\tx\tA boy sits.\tA boy runs.\t5\t5c\tcontradiction"]
    pairs = read_pairs(write(tmp_path / "snli_1.0_test.txt", "\n".join([header, *rows]) + "\n"))
    assert pairs.labels == ["entailment", "contradiction"] and pairs.dropped == 1
    assert pairs.premises == ["A woman sings .", "A boy sits ."]
    assert pairs.hypotheses == ["Someone sings .", "A boy runs ."]


def test_the_originals_processed_format_is_taken_as_tokenised(tmp_path) -> None:
    pairs = read_pairs(write(tmp_path / "train.txt", "neutral\tA man , smiling .\tA man is happy .\r\n"
                                                     "-\tA b .\tc d .\n"
                                                     "entailment\tTwo  dogs\tDogs\n"))
    assert pairs.labels == ["neutral", "entailment"] and pairs.dropped == 1
    assert pairs.premises == ["A man , smiling .", "Two dogs"] and pairs.hypotheses == ["A man is happy .", "Dogs"]


def test_read_snli_finds_each_split_and_takes_explicit_files(tmp_path) -> None:
    for split in ("train", "dev", "test"):
        write(tmp_path / f"snli_1.0_{split}.jsonl", jsonl({"gold_label": "entailment", "sentence1": split, "sentence2": "x"}))
    other = write(tmp_path / "other.txt", "neutral\tp\th\n")
    data = read_snli(tmp_path, {"test": other})
    assert data["train"].premises == ["train"] and data["dev"].premises == ["dev"] and data["test"].labels == ["neutral"]


@pytest.mark.parametrize("name, content, message", [
    ("snli_1.0_train.jsonl", '{"gold_label": "entailment", "sentence1": "a"}\n', ":1: missing field(s) sentence2"),
    ("snli_1.0_train.jsonl", jsonl({"gold_label": "entailment", "sentence1": "a", "sentence2": "b"}) + "{oops\n",
     ":2: not valid JSON"),
    ("snli_1.0_train.jsonl", jsonl({"gold_label": "maybe", "sentence1": "a", "sentence2": "b"}), ":1: unknown label 'maybe'"),
    ("train.txt", "entailment\ta\tb\nneutral\tonly two\n", ":2: 2 tab-separated fields"),
    ("train.txt", "just some text\n", ":1: unrecognised format; expected SNLI/MultiNLI JSON lines"),
    ("train.txt", b"entailment\ta\tb\nneutral\tcaf\xe9\tb\n", ":2: not UTF-8 text"),
    ("snli_1.0_train.txt", "gold_label\tsentence1\n", ":1: the header row lacks the column(s) sentence2"),
    ("train.txt", "", ": the file is empty"),
    ("train.txt", "-\ta\tb\n", ": no labelled pairs (1 without a gold label)"),
])
def test_bad_files_give_one_line_with_file_and_line(tmp_path, name, content, message) -> None:
    p = write(tmp_path / name, content)
    with pytest.raises(EntailmentDataError) as e:
        read_pairs(p)
    text = str(e.value)
    assert text.startswith(str(p)) and message in text and "\n" not in text


def test_a_missing_split_names_the_folder_and_the_names_tried(tmp_path) -> None:
    write(tmp_path / "train.txt", "neutral\tp\th\n")
    with pytest.raises(EntailmentDataError, match=r"no dev file \(looked for snli_1.0_dev.jsonl, snli_1.0_dev.txt"):
        read_snli(tmp_path)
    with pytest.raises(EntailmentDataError, match="not a folder"):
        read_snli(tmp_path / "absent")
