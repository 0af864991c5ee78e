"""Hypernym completion: measures, loss, threshold, training step, baselines, run folder, CLI, and a
real-data run on the mammal.n.01 subtree of WordNet 3.0."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from wordnet_files import TINY, write_wordnet

from order_embedding import runs
from order_embedding.cli import main
from order_embedding.evaluation import accuracy_at, best_threshold
from order_embedding.hypernym.experiment import (
    HypernymConfig,
    closure_baseline,
    embedding_errors,
    learning_rate,
    load_embeddings,
    pair_errors,
    run_experiment,
    train_step,
    training_negatives,
)
from order_embedding.hypernym.wordnet import (
    HypernymDataset,
    build_dataset,
    read_wordnet,
)
from order_embedding.loss import pair_hinge_loss

WORDNET = Path("/usr/share/wordnet")


def test_order_error_is_the_squared_violation_of_the_hypernym_above() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((7, 5)), rng.random((7, 5))
    expected = (np.maximum(0, y - x) ** 2).sum(1)  # E(hyponym x, hypernym y)
    got = pair_errors(torch.from_numpy(x), torch.from_numpy(y), "order").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert pair_errors(torch.tensor([[2.0, 3.0]]), torch.tensor([[1.0, 0.0]]), "order").item() == 0  # y <= x holds


def test_symmetric_error_is_one_minus_cosine_and_ignores_direction() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    expected = 1 - (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    np.testing.assert_allclose(pair_errors(tx, ty, "symmetric").numpy(), expected, rtol=1e-10)
    np.testing.assert_array_equal(pair_errors(tx, ty, "symmetric").numpy(), pair_errors(ty, tx, "symmetric").numpy())
    with pytest.raises(ValueError, match="unknown measure"):
        pair_errors(tx, ty, "bilinear")


def test_hinge_loss_by_hand() -> None:
    errors = torch.tensor([0.5, 2.0, 0.25, 3.0])
    labels = torch.tensor([True, True, False, False])
    # positives pay E, negatives max(0, 1 - E): (0.5 + 2 + 0.75 + 0) / 4
    assert pair_hinge_loss(errors, labels, 1.0, "mean").item() == pytest.approx(3.25 / 4)


def test_threshold_by_hand_with_ties() -> None:
    errors = np.array([0.9, 0.2, 0.1, 0.5, 0.2])
    labels = np.array([0, 1, 1, 0, 0], bool)
    # cut below 0.2: 1 TP + 3 TN; cut after the tied 0.2s: 2 TP + 2 TN; both 4/5, the lower wins
    threshold, acc = best_threshold(errors, labels)
    assert threshold == pytest.approx(0.15) and acc == pytest.approx(0.8)
    assert accuracy_at(errors, labels, threshold) == pytest.approx(0.8)
    assert best_threshold(np.array([1.0, 2.0, 3.0]), np.array([True, True, False])) == (2.5, 1.0)
    assert best_threshold(np.array([1.0, 2.0]), np.array([True, True])) == (2.0, 1.0)
    t, acc = best_threshold(np.array([1.0, 2.0]), np.array([False, False]))
    assert t < 1.0 and acc == 1.0


def test_threshold_is_the_best_of_all_cuts() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        errors = rng.integers(0, 12, 40) / 4.0  # many ties
        labels = rng.random(40) < 0.5 + 0.3 * (errors < 1.5)
        threshold, acc = best_threshold(errors, labels)
        candidates = np.r_[errors, errors.min() - 1]
        brute = max(np.mean((errors <= t) == labels) for t in candidates)
        assert acc == pytest.approx(brute)
        assert accuracy_at(errors, labels, threshold) == pytest.approx(acc)
        assert not np.isin(threshold, errors) or threshold == errors.max()  # strictly between distinct values


def test_threshold_bad_input() -> None:
    with pytest.raises(ValueError, match="as many labels"):
        best_threshold(np.array([1.0, 2.0]), np.array([True]))
    with pytest.raises(ValueError, match="NaN"):
        best_threshold(np.array([1.0, np.nan]), np.array([True, False]))


@pytest.mark.parametrize("method", ["order", "symmetric"])
def test_train_step_equals_dense_adam_through_the_whole_table(method: str) -> None:
    # The reference: clamp the whole table, autograd through the lookup (a dense gradient), and
    # textbook single-tensor Adam over every row. Each batch reads rows of one half of the table
    # only, so the other half goes untouched for several steps and keeps moving with decaying moments.
    n, dim, steps = 40, 6, 12
    start = torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    batches = []
    for k in range(steps):
        half = (k // 3) % 2  # three steps on rows 0..19, three on rows 20..39, ...
        pairs = torch.randint(20 * half, 20 * half + 20, (25, 2), generator=gen)  # repeated rows included
        batches.append((pairs, torch.rand(25, generator=gen) < 0.5))

    weight = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([weight], lr=0.05)
    grad = torch.zeros_like(weight)
    ref = torch.nn.Parameter(start.clone())
    ref_opt = torch.optim.Adam([ref], lr=0.05, foreach=False)
    visible = (lambda w: w.detach().clamp(min=0)) if method == "order" else (lambda w: w.detach())
    for k, (pairs, labels) in enumerate(batches):
        before = ref.detach().clone()
        loss = train_step(weight, grad, opt, pairs, labels, method, 1.0)
        with torch.no_grad():
            if method == "order":
                ref.clamp_(min=0)
        ref_opt.zero_grad()
        ref_loss = pair_hinge_loss(pair_errors(ref[pairs[:, 0]], ref[pairs[:, 1]], method), labels, 1.0, "mean")
        ref_loss.backward()
        ref_opt.step()
        assert loss == pytest.approx(ref_loss.item(), rel=1e-12)
        assert torch.count_nonzero(grad) == 0  # the buffer is left zeroed
        torch.testing.assert_close(visible(weight), visible(ref), rtol=1e-9, atol=1e-12)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt.state[weight][key], ref_opt.state[ref][key], rtol=1e-9, atol=1e-15)
        untouched = torch.ones(n, dtype=torch.bool)
        untouched[pairs.reshape(-1)] = False
        if k >= 3:  # untouched rows, with moments from earlier steps, moved in this step
            assert (visible(ref)[untouched] != visible(before)[untouched]).any()


def test_closure_baseline_by_hand(tmp_path: Path) -> None:
    write_wordnet(tmp_path, TINY)
    g = read_wordnet(tmp_path)  # 1 animal->0 entity, 2 mammal->1, 3 dog->2, ...
    arr = lambda rows: np.array(rows, dtype=np.int64).reshape(-1, 2)  # noqa: E731
    data = HypernymDataset(
        graph=g, closure=arr([]), train=arr([[1, 0], [2, 1], [3, 2]]),
        dev=arr([[2, 0], [3, 0], [4, 1]]), dev_negatives=arr([[0, 1], [5, 1], [3, 1]]),
        test=arr([[3, 1], [7, 6]]), test_negatives=arr([[1, 2], [7, 7]]), seed=0,
    )
    base = closure_baseline(data)
    # dev: 2->0 and 3->0 implied, 4->1 not; negatives 0->1, 5->1 absent, 3->1 implied (wrongly "true")
    assert base["dev_accuracy"] == pytest.approx(4 / 6)
    # test: 3->1 implied, 7->6 not; both negatives absent
    assert base["test_accuracy"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("negatives, filtered, reversed_", [(1, False, False), (3, True, False), (2, True, True),
                                                             (1, False, True)])
def test_training_negatives_by_brute_force(tmp_path: Path, negatives: int, filtered: bool, reversed_: bool) -> None:
    write_wordnet(tmp_path, TINY)
    data = build_dataset(read_wordnet(tmp_path), seed=0, dev_size=2, test_size=2)
    config = HypernymConfig(negatives=negatives, filter_negatives=filtered, reversed_negatives=reversed_)
    rows = training_negatives(data, config, np.random.default_rng(5))
    train = [tuple(e) for e in data.train.tolist()]
    assert len(rows) == len(train) * (negatives + reversed_)
    for k, (a, b) in enumerate(rows.tolist()[:negatives * len(train)]):
        x, y = train[k % len(train)]  # the k-th drawn row corrupts one end of its training edge
        assert (a == x) or (b == y)
        if filtered:
            assert (a, b) not in train
    if reversed_:
        assert [tuple(r) for r in rows.tolist()[negatives * len(train):]] == [(y, x) for x, y in train]
    if filtered:  # unfiltered draws do hit training edges on this 10-synset graph, so the filter is what removes them
        unfiltered = training_negatives(data, HypernymConfig(negatives=negatives), np.random.default_rng(5))
        assert any(tuple(r) in train for r in unfiltered.tolist())


def test_learning_rate_schedule() -> None:
    assert learning_rate(HypernymConfig(lrate=0.01), 7, 10) == 0.01
    decay = HypernymConfig(lrate=0.01, lr_decay=True)
    assert [learning_rate(decay, u, 4) for u in range(4)] == pytest.approx([0.01, 0.0075, 0.005, 0.0025])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown measure"):
        HypernymConfig(method="poincare")
    with pytest.raises(ValueError, match="dim must be a whole number at least 1"):
        HypernymConfig(dim=0)
    with pytest.raises(ValueError, match="dim must be a whole number"):
        HypernymConfig(dim=2.5)
    with pytest.raises(ValueError, match="margin must be greater than 0"):
        HypernymConfig(margin=0)
    assert HypernymConfig(method="symmetric").method == "cosine"  # the model's name, read as its measure


def test_run_folder_on_tiny_wordnet(tmp_path: Path) -> None:
    write_wordnet(tmp_path / "wn", TINY)
    data = build_dataset(read_wordnet(tmp_path / "wn"), seed=0, dev_size=3, test_size=3)
    configs = [HypernymConfig(method=m, dim=4, max_epochs=3, batch_size=4, validFreq=2) for m in ("order", "cosine")]
    results = run_experiment(data, configs, run_dir=tmp_path / "run", source={"wordnet": "tiny"}, progress=False)
    run = tmp_path / "run"
    config = runs.load_json(run / runs.CONFIG)
    assert config["kind"] == "hypernym" and config["train"]["order"]["dim"] == 4
    records = list(runs.read_metrics(run))
    valid = [r for r in records if r["event"] == "valid"]
    assert {r["model"] for r in valid} == {"order", "symmetric"}
    for r in valid:
        assert set(r) >= {"event", "epoch", "uidx", "examples", "dev_accuracy", "threshold", "best", "time"}
        assert 0 <= r["dev_accuracy"] <= 100
    order_valid = [r for r in valid if r["model"] == "order"]
    assert order_valid[0]["best"] and max(r["dev_accuracy"] for r in order_valid) == results["models"]["order"]["dev_accuracy"]
    assert any(r["event"] == "train" and r["loss"] >= 0 for r in records)
    saved = load_embeddings(run)
    assert saved.embeddings["order"].shape == (len(TINY), 4) and (saved.embeddings["order"] >= 0).all()
    assert saved.thresholds["order"] == results["models"]["order"]["threshold"]
    assert runs.load_json(run / "results.json") == json.loads(json.dumps(results))
    with pytest.raises(ValueError, match="already holds a run"):
        run_experiment(data, configs, run_dir=run, progress=False)


def test_load_embeddings_refuses_other_runs(tmp_path: Path) -> None:
    runs.save_json(tmp_path / runs.CONFIG, {"kind": "caption-image", "model": {}, "train": {}})
    with pytest.raises(runs.RunError, match="not a hypernym run"):
        load_embeddings(tmp_path)


def test_cli_reports_a_missing_wordnet(tmp_path: Path, capsys) -> None:
    assert main(["hypernym", "--wordnet", str(tmp_path / "none"), "--save_dir", str(tmp_path), "--name", "run", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "wordnet-base" in err and len(err.strip().splitlines()) == 1


def test_cli_reports_a_file_in_the_wrong_format(tmp_path: Path, capsys) -> None:
    (tmp_path / "data.noun").write_text("this is not wordnet\n")
    assert main(["hypernym", "--wordnet", str(tmp_path), "--save_dir", str(tmp_path), "--name", "run", "--quiet"]) == 2
    assert "not in the WordNet database format" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.system_packages("wordnet-base")
def test_cli_on_the_mammal_subtree(tmp_path: Path, capsys) -> None:
    """The fast real-data check: WordNet 3.0 below mammal.n.01 (1,180 synsets, 6,542 closure edges)."""
    out, js = tmp_path / "run", tmp_path / "r.json"
    rc = main(["hypernym", "--root", "mammal.n.01", "--dev-size", "500", "--test-size", "500", "--max_epochs", "30",
               "--batch-size", "100", "--validFreq", "50", "--seed", "0", "--save_dir", str(tmp_path), "--name", "run",
               "--json", str(js), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "order-embeddings" in printed and "transitive closure" in printed
    r = json.loads(js.read_text())
    assert r["nodes"] == 1182 and r["edges"] == 6542 and r["seed"] == 0 and r["seconds"] > 0
    m = r["models"]
    assert set(m) == {"order", "symmetric", "transitive_closure"}
    # The order model learns the hierarchy and beats both baselines on held-out edges.
    assert m["order"]["test_accuracy"] >= 79.0
    assert m["order"]["test_accuracy"] >= m["transitive_closure"]["test_accuracy"] + 1.5
    assert m["order"]["test_accuracy"] >= m["symmetric"]["test_accuracy"] + 1.5

    # The saved order embeddings know the direction of an edge; the symmetric ones cannot.
    saved = load_embeddings(out)
    cfg = runs.load_json(out / runs.CONFIG)
    data = build_dataset(read_wordnet(WORDNET).descendants("mammal.n.01"), seed=0, dev_size=500, test_size=500)
    assert cfg["data"]["test"] == 500 and len(saved.names) == 1182
    forward = embedding_errors(saved.embeddings["order"], data.test, "order")
    backward = embedding_errors(saved.embeddings["order"], data.test[:, ::-1], "order")
    assert np.mean(forward < backward) >= 0.95
    sym = saved.embeddings["symmetric"]
    np.testing.assert_allclose(embedding_errors(sym, data.test, "symmetric"),
                               embedding_errors(sym, data.test[:, ::-1], "symmetric"), atol=1e-6)
    assert saved.errors([("dog.n.01", "mammal.n.01")])[0] <= saved.thresholds["order"]
