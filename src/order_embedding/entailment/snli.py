"""Readers of SNLI-style entailment files, and the tokeniser of their sentences.

Three formats are read, told apart by their first line:

- JSON lines, as SNLI 1.0 (``snli_1.0_{train,dev,test}.jsonl``) and MultiNLI ship them:
  one object a line with ``gold_label``, ``sentence1`` (the premise) and ``sentence2``
  (the hypothesis); other fields are ignored;
- the tab-separated ``.txt`` files of the same releases: a header row naming the
  columns, of which ``gold_label``, ``sentence1`` and ``sentence2`` are used;
- the original project's processed files ``{train,dev,test}.txt``: ``label <TAB>
  premise <TAB> hypothesis``, no header, sentences already tokenised.

Gold labels are ``entailment``, ``neutral`` or ``contradiction``; pairs labelled ``-``
(no consensus among the annotators) are dropped and counted. Sentences of the first
two formats are tokenised with NLTK's Treebank-style word tokeniser (``NLTKWordTokenizer``,
the one ``nltk.word_tokenize`` applies to each sentence), which needs no data download;
unlike ``word_tokenize`` it does not first split a text into sentences (that step needs
the downloadable Punkt model), so a full stop inside a two-sentence premise stays on its
word. Case is kept, as the original did. Any problem is a :class:`EntailmentDataError`
naming the file and line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from nltk.tokenize import NLTKWordTokenizer

from .. import runs

LABELS = ("entailment", "neutral", "contradiction")
#: The gold label of pairs without annotator consensus.
NO_LABEL = "-"
SPLITS = ("train", "dev", "test")
#: File names looked for in a data folder, for each split, in this order.
FILE_NAMES = ("snli_1.0_{split}.jsonl", "snli_1.0_{split}.txt", "{split}.jsonl", "{split}.txt")
EXPECTED = ("expected SNLI/MultiNLI JSON lines (objects with gold_label, sentence1, sentence2), their tab-separated "
            ".txt with a header row naming gold_label, sentence1 and sentence2, or 'label<TAB>premise<TAB>hypothesis' lines")

_TOKENIZER = NLTKWordTokenizer()


class EntailmentDataError(ValueError):
    """An entailment data file is missing or malformed; the message names the file and line."""


def tokenize(text: str) -> str:
    """A sentence as space-separated Treebank-style tokens (case kept)."""
    return " ".join(_TOKENIZER.tokenize(text))


@dataclass
class Pairs:
    """Premise-hypothesis pairs of one split: tokenised sentences and gold labels, plus the count dropped."""

    premises: list[str] = field(default_factory=list)
    hypotheses: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    dropped: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def entailed(self) -> list[bool]:
        """The binary targets: True iff the gold label is entailment."""
        return [label == "entailment" for label in self.labels]


def _lines(path: Path):
    """(line number, text) of each non-blank line (``\\n``, ``\\r\\n`` or ``\\r`` ends one); bytes that are not
    UTF-8, over-long lines and files that are not regular raise with the file (and line)."""
    try:
        for number, raw in enumerate(runs.iter_lines(path, "file"), start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise EntailmentDataError(f"{path}:{number}: not UTF-8 text (byte {e.start + 1} of the line)") from None
            if text.strip():
                yield number, text
    except runs.RunError as e:
        raise EntailmentDataError(str(e)) from None


def _add(pairs: Pairs, where: str, label: object, premise: str, hypothesis: str) -> None:
    if label == NO_LABEL:
        pairs.dropped += 1
        return
    if label not in LABELS:
        raise EntailmentDataError(f"{where}: unknown label {label!r} (expected one of {', '.join(LABELS)} or '-')")
    pairs.labels.append(str(label))
    pairs.premises.append(premise)
    pairs.hypotheses.append(hypothesis)


def _json_pair(pairs: Pairs, where: str, text: str) -> None:
    try:
        obj = runs.parse_json(text, where)
    except runs.RunError as e:
        raise EntailmentDataError(f"{e}; {EXPECTED}") from None
    if not isinstance(obj, dict):
        raise EntailmentDataError(f"{where}: not a JSON object; {EXPECTED}")
    missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in obj]
    if missing:
        raise EntailmentDataError(f"{where}: missing field(s) {', '.join(missing)}")
    for k in ("sentence1", "sentence2"):
        if not isinstance(obj[k], str):
            raise EntailmentDataError(f"{where}: {k} is not a string")
    _add(pairs, where, obj["gold_label"], tokenize(obj["sentence1"]), tokenize(obj["sentence2"]))


def read_pairs(path: str | os.PathLike) -> Pairs:
    """All labelled pairs of one file in any of the three formats (module docstring)."""
    path = Path(path)
    pairs = Pairs(source=str(path))
    columns: tuple[int, int, int] | None = None
    form = None
    for number, text in _lines(path):
        where = f"{path}:{number}"
        if form is None:
            if text.lstrip().startswith("{"):
                form = "jsonl"
            elif text.split("\t")[0] == "gold_label":
                header = text.split("\t")
                missing = [k for k in ("sentence1", "sentence2") if k not in header]
                if missing:
                    raise EntailmentDataError(f"{where}: the header row lacks the column(s) {', '.join(missing)}")
                columns = (0, header.index("sentence1"), header.index("sentence2"))
                form = "tab"
                continue
            elif text.count("\t") == 2:
                form = "processed"
            else:
                raise EntailmentDataError(f"{where}: unrecognised format; {EXPECTED}")
        if form == "jsonl":
            _json_pair(pairs, where, text)
        elif form == "tab":
            assert columns is not None  # read from the header row that set the form
            fields = text.split("\t")
            if len(fields) <= max(columns):
                raise EntailmentDataError(f"{where}: {len(fields)} tab-separated fields, the header needs {max(columns) + 1}")
            _add(pairs, where, fields[0], tokenize(fields[columns[1]]), tokenize(fields[columns[2]]))
        else:
            fields = text.split("\t")
            if len(fields) != 3:
                raise EntailmentDataError(f"{where}: {len(fields)} tab-separated fields, expected label<TAB>premise<TAB>hypothesis")
            _add(pairs, where, fields[0], " ".join(fields[1].split()), " ".join(fields[2].split()))
    if form is None:
        raise EntailmentDataError(f"{path}: the file is empty; {EXPECTED}")
    if not pairs.labels:
        raise EntailmentDataError(f"{path}: no labelled pairs ({pairs.dropped} without a gold label)")
    return pairs


def find_split(data_dir: str | os.PathLike, split: str) -> Path:
    """The file of ``split`` in a data folder (first of :data:`FILE_NAMES` present)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EntailmentDataError(f"{data_dir}: not a folder")
    names = [n.format(split=split) for n in FILE_NAMES]
    for name in names:
        if (data_dir / name).is_file():
            return data_dir / name
    raise EntailmentDataError(f"{data_dir}: no {split} file (looked for {', '.join(names)})")


def read_snli(data_dir: str | os.PathLike | None, files: dict[str, str | os.PathLike] | None = None) -> dict[str, Pairs]:
    """The train, dev and test pairs of a data folder; ``files`` names a split's file explicitly
    (for example MultiNLI's ``multinli_1.0_dev_matched.jsonl`` as dev)."""
    files = {k: v for k, v in (files or {}).items() if v is not None}
    unknown = sorted(set(files) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; the splits are {', '.join(SPLITS)}")
    out = {}
    for split in SPLITS:
        if split in files:
            out[split] = read_pairs(files[split])
        elif data_dir is None:
            raise EntailmentDataError(f"no file for the {split} split: name a data folder or the {split} file")
        else:
            out[split] = read_pairs(find_split(data_dir, split))
    return out
