"""``--training ganea``: Ganea et al.'s SGD training of order-embeddings, against autograd on the summed loss,
brute-force negative checks, and a run that is interrupted and resumed."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from wordnet_files import TINY, write_wordnet

from order_embedding import runs
from order_embedding.cli import main
from order_embedding.hypernym import experiment as hypernym
from order_embedding.hypernym import sgd
from order_embedding.hypernym.wordnet import build_dataset, read_wordnet, transitive_closure


def random_edges(n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    edges = {(k, int(rng.integers(0, k))) for k in range(1, n)}
    while len(edges) < m:
        a, b = sorted(rng.integers(0, n, 2).tolist(), reverse=True)
        if a != b:
            edges.add((a, b))
    return transitive_closure(np.array(sorted(edges)), n)


def test_excluded_index_lists_each_synset_and_its_known_hyponyms() -> None:
    edges = random_edges(40, 60, seed=1)
    start, index = sgd.excluded_index(np.concatenate([edges, edges[:5]]), 40)  # a repeated edge counts once
    for y in range(40):
        assert index[start[y]:start[y + 1]].tolist() == sorted({y} | {int(x) for x, h in edges if h == y})


def test_drawn_negatives_avoid_the_hypernym_and_its_known_hyponyms() -> None:
    n = 30
    edges = random_edges(n, 50, seed=2)
    known = {(int(x), int(y)) for x, y in edges}
    start, index = sgd.excluded_index(edges, n)
    drawn = sgd.draw_hyponym_negatives(edges, start, index, n, 40, 7)
    assert drawn.shape == (len(edges), 40)
    below = np.bincount(edges[:, 1], minlength=n)
    assert below[0] == n - 1  # the root: every synset lies below it, so its draws are from all synsets
    for (_x, y), row in zip(edges, drawn):
        if below[y] < n - 1:
            assert all(v != y and (int(v), int(y)) not in known for v in row)
        else:
            assert np.all((row >= 0) & (row < n))
    # every allowed replacement of a hypernym with many hyponyms turns up, each about equally often
    y = int(np.where(below < n - 1, below, -1).argmax())
    allowed = [v for v in range(n) if v != y and (v, y) not in known]
    rows = np.tile(edges[edges[:, 1] == y][:1], (5000, 1))
    counts = np.bincount(sgd.draw_hyponym_negatives(rows, start, index, n, 4, 3).ravel(), minlength=n)
    expected = 20000 / len(allowed)
    assert set(np.flatnonzero(counts)) == set(allowed)
    assert np.all(np.abs(counts[allowed] - expected) < 5 * math.sqrt(expected))
    # with nothing known, only the hypernym itself is avoided
    empty = sgd.excluded_index(np.empty((0, 2), np.int64), n)
    free = sgd.draw_hyponym_negatives(edges, *empty, n, 40, 7)
    assert np.all(free != edges[:, 1:]) and len(np.unique(free)) == n


def reference_epoch(table: np.ndarray, edges: np.ndarray, negatives: np.ndarray, lr: float, margin: float,
                    batch_size: int) -> tuple[np.ndarray, float]:
    """SGD by autograd on each batch's summed loss E(x, y) + sum max(0, margin - E(x', y))."""
    t = torch.tensor(table, dtype=torch.float64)
    total = 0.0
    for first in range(0, len(edges), batch_size):
        w = t.clone().requires_grad_()
        loss = torch.zeros((), dtype=torch.float64)
        for j in range(first, min(first + batch_size, len(edges))):
            x, y = edges[j]
            loss = loss + torch.clamp(w[y] - w[x], min=0).pow(2).sum()
            for v in negatives[j]:
                loss = loss + torch.clamp(margin - torch.clamp(w[y] - w[v], min=0).pow(2).sum(), min=0)
        loss.backward()
        assert w.grad is not None
        t = t - lr * w.grad
        total += float(loss.detach())
    return t.numpy(), total


@pytest.mark.parametrize("batch_size", [1, 3, 20])
def test_sgd_epoch_is_sgd_on_the_summed_loss(batch_size: int) -> None:
    rng = np.random.default_rng(0)
    n, d = 12, 4
    table = rng.uniform(0, 1, (n, d))
    edges = random_edges(n, 16, seed=3)[:17]
    negatives = rng.integers(0, n, (len(edges), 3))
    expected, expected_loss = reference_epoch(table, edges, negatives, 0.1, 0.6, batch_size)
    e = np.clip(table[edges[:, 1], None] - table[negatives], 0, None) ** 2
    assert 0 < (e.sum(-1) < 0.6).sum() < e[..., 0].size  # negatives inside the margin and outside it, at the start
    got = table.copy()
    loss = sgd.sgd_epoch(got, edges, negatives, 0.1, 0.6, batch_size)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    assert not np.allclose(got, table)  # the epoch moved the table


def test_shifted_table_keeps_every_error() -> None:
    table = torch.randn(50, 5)
    pairs = np.random.default_rng(0).integers(0, 50, (200, 2))
    moved = sgd.shifted(table)
    assert torch.all(moved >= 0) and torch.all(moved.min(dim=0).values == 0)
    np.testing.assert_allclose(hypernym.embedding_errors(moved, pairs, "order"),
                               hypernym.embedding_errors(table, pairs, "order"), rtol=1e-5, atol=1e-5)


class Interrupt(Exception):
    """Stands for a kill in the middle of a run."""


def _config() -> hypernym.HypernymConfig:
    return hypernym.HypernymConfig(training="ganea", dim=3, max_epochs=4, batch_size=2, lrate=0.1, negatives=3,
                                   filter_negatives=True)


def test_a_ganea_training_run_resumes_to_the_same_end(tmp_path: Path, monkeypatch) -> None:
    write_wordnet(tmp_path / "wn", TINY)
    data = build_dataset(read_wordnet(tmp_path / "wn"), seed=0, dev_size=2, test_size=2)
    whole = hypernym.run_experiment(data, [_config()], run_dir=tmp_path / "whole", progress=False)
    order = whole["models"]["order"]
    assert order["updates"] == 4 * math.ceil(len(data.train) / 2)
    saved = runs.load_tensors(tmp_path / "whole" / runs.BEST)[0]["order"]
    assert torch.all(saved >= 0) and torch.all(saved.min(dim=0).values == 0)  # shifted into the orthant

    real, calls = sgd.train_epoch, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sgd, "train_epoch", interrupted)
    with pytest.raises(Interrupt):
        hypernym.run_experiment(data, [_config()], run_dir=tmp_path / "part", progress=False)
    monkeypatch.undo()
    part = hypernym.run_experiment(data, [_config()], run_dir=tmp_path / "part", progress=False, resume=True)
    assert {k: v for k, v in part["models"]["order"].items() if k != "seconds"} == \
        {k: v for k, v in order.items() if k != "seconds"}
    for name in (runs.BEST, "last.order.safetensors"):
        a, b = runs.load_tensors(tmp_path / "whole" / name)[0], runs.load_tensors(tmp_path / "part" / name)[0]
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("args, message", [
    ([], "--training ganea trains the order model only (add --no-symmetric)"),
    (["--no-symmetric", "--reversed-negatives"], "--reversed-negatives applies only to --training paper"),
])
def test_bad_ganea_training_options_give_one_line(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    write_wordnet(tmp_path / "wn", TINY)
    code = main(["hypernym", "--wordnet", str(tmp_path / "wn"), "--training", "ganea", "--save_dir", str(tmp_path),
                 *args])
    err = capsys.readouterr().err
    assert code != 0 and err.strip().splitlines() == [f"order-embedding hypernym: error: {message}"]
    assert not (tmp_path / "hypernym").exists()
