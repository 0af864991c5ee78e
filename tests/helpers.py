"""Helpers shared by the tests: free loopback ports and independent reference computations."""
from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from order_embedding.entailment.experiment import EntailmentConfig


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def order_penalty(s: np.ndarray, im: np.ndarray) -> np.ndarray:
    """``E[a, b] = sum_i max(0, s[a, i] - im[b, i])^2`` in float64, materialising the 3-D difference (NaN propagates)."""
    diff = np.asarray(s, np.float64)[:, None, :] - np.asarray(im, np.float64)[None, :, :]
    return (np.maximum(diff, 0.0) ** 2).sum(-1)


def stable_topk(errors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row and their columns, ascending, ties to the lower column."""
    order = np.argsort(errors, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(errors, order, 1), order


def needs(module: str, extra: str) -> pytest.MarkDecorator:
    """Skip unless ``module`` can be imported; the reason names the package and the extra that installs it."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"needs the '{module}' package: pip install '.[{extra}]'")


#: Real COCO caption text, when the project's shared data folder lies beside the checkout (as in CI).
REAL_CAPTIONS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco_karpathy_test5k_captions.txt"

needs_real_captions = pytest.mark.skipif(not REAL_CAPTIONS.is_file(),
                                         reason=f"needs the real COCO captions at {REAL_CAPTIONS}")


class Ran:
    """What one in-process run of the command line gave: exit status and standard error."""

    def __init__(self, capsys, argv: tuple[object, ...]) -> None:
        from order_embedding.cli import main

        capsys.readouterr()
        self.returncode = main([str(a) for a in argv])
        self.stderr = capsys.readouterr().err


def run(capsys, *argv: object) -> Ran:
    """The command line in this process."""
    return Ran(capsys, argv)


def write_tiny_snli(root: Path) -> Path:
    """A tiny SNLI folder under ``root`` (the same 18 sentence pairs in each split) for the entailment tests."""
    d = root / "snli"
    d.mkdir()
    rows = [{"gold_label": g, "sentence1": f"A {c} dog runs .", "sentence2": f"A dog {v} ."}
            for g, c, v in [("entailment", "big", "runs"), ("contradiction", "small", "sleeps"),
                            ("neutral", "red", "runs fast")] * 6]
    for split in ("train", "dev", "test"):
        (d / f"snli_1.0_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


#: A tiny entailment model for the tests that train one.
TINY_ENTAILMENT = EntailmentConfig(dim=8, dim_word=4, batch_size=4, max_epochs=3, validFreq=3, dispFreq=2, lrate=0.01)
