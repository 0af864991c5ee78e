"""The hypernym protocols of Ganea et al. (basic edges, split, negatives, F1) and of Nickel and Kiela
(reconstruction mean rank and MAP), each against a brute-force or hand-made computation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from wordnet_files import TINY, write_wordnet

from order_embedding.cli import main
from order_embedding.evaluation import best_f1_threshold, precision_recall_f1
from order_embedding.hypernym import load_embeddings
from order_embedding.hypernym.reconstruction import reconstruction_metrics
from order_embedding.hypernym.wordnet import (
    GANEA_PERCENTS,
    NounGraph,
    ganea_negatives,
    ganea_split,
    read_wordnet,
    transitive_closure,
    transitive_reduction,
    without_root,
)

WORDNET = Path("/usr/share/wordnet")


def as_set(edges: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.asarray(edges).reshape(-1, 2)}


def random_dag(n: int, extra: int, seed: int) -> NounGraph:
    """A rooted DAG: node k > 0 has a parent among 0..k-1, plus ``extra`` random edges downward in index."""
    rng = np.random.default_rng(seed)
    edges = {(k, int(rng.integers(0, k))) for k in range(1, n)}
    while len(edges) < n - 1 + extra:
        a, b = sorted(rng.integers(0, n, 2).tolist(), reverse=True)
        if a != b:
            edges.add((a, b))
    e = np.array(sorted(edges), dtype=np.int64)
    return NounGraph(offsets=np.arange(n, dtype=np.int64), names=[f"s{k}.n.01" for k in range(n)], edges=e)


def brute_reduction(closure: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Closure edges (a, c) with no b such that (a, b) and (b, c) are closure edges."""
    above: dict[int, set[int]] = {}
    for a, b in closure:
        above.setdefault(a, set()).add(b)
    return {(a, c) for a, c in closure if not any(c in above.get(b, ()) for b in above[a])}


def test_basic_edges_are_the_transitive_reduction_by_brute_force() -> None:
    for seed in range(4):
        g = random_dag(40, 30, seed)
        closure = transitive_closure(g.edges, g.n_nodes)
        basic = transitive_reduction(closure, g.n_nodes)
        assert as_set(basic) == brute_reduction(as_set(closure))
        assert len(basic) == len(as_set(basic))
        assert as_set(transitive_closure(basic, g.n_nodes)) == as_set(closure)  # the reduction generates the closure


def test_a_redundant_direct_edge_is_not_basic() -> None:
    # 0 <- 1 <- 2, and 2 -> 0 directly as well: (2, 0) is a direct edge but not basic
    closure = transitive_closure(np.array([[1, 0], [2, 1], [2, 0]]), 3)
    assert as_set(transitive_reduction(closure, 3)) == {(1, 0), (2, 1)}


def test_without_root_drops_the_root_and_its_edges(tmp_path: Path) -> None:
    write_wordnet(tmp_path / "wn", TINY)
    g = read_wordnet(tmp_path / "wn")
    noun = without_root(g)  # entity.n.01 is the one synset without hypernyms
    # frump.n.01's only edge led to entity.n.01: it goes too
    assert sorted(noun.names) == sorted(set(g.names) - {"entity.n.01", "frump.n.01"})
    named = {(noun.names[a], noun.names[b]) for a, b in noun.edges}
    expected = {(g.names[a], g.names[b]) for a, b in g.edges if g.names[b] != "entity.n.01"}
    assert named == expected
    animal = without_root(g, "animal.n.01")
    assert sorted(animal.names) == ["dog.n.01", "fido.n.01", "mammal.n.01", "pet.n.01"]


def test_ganea_split_sizes_disjointness_and_nesting() -> None:
    g = random_dag(300, 200, 7)
    closure = as_set(transitive_closure(g.edges, g.n_nodes))
    basic = brute_reduction(closure)
    non_basic = closure - basic
    held = 5 * len(non_basic) // 100
    assert held >= 5
    trains = {}
    for p in GANEA_PERCENTS:
        s = ganea_split(g, p, seed=3)
        d = s.data
        dev, test, train = as_set(d.dev), as_set(d.test), as_set(d.train)
        assert len(d.dev) == len(dev) == held and len(d.test) == len(test) == held
        assert dev <= non_basic and test <= non_basic and not dev & test
        assert basic <= train and not train & (dev | test) and train <= closure
        assert len(d.train) == len(train) == len(basic) + p * len(non_basic) // 100
        trains[p] = (train, dev, test)
    for small, large in zip(GANEA_PERCENTS, GANEA_PERCENTS[1:]):
        assert trains[small][0] <= trains[large][0]
        assert trains[small][1:] == trains[large][1:]  # one dev and test set for every percentage


def test_ganea_negatives_are_never_edges_and_keep_one_end() -> None:
    g = random_dag(200, 150, 5)
    closure = transitive_closure(g.edges, g.n_nodes)
    known = as_set(closure)
    positives = closure[np.random.default_rng(0).choice(len(closure), 60, replace=False)]
    neg = ganea_negatives(positives, closure, g.n_nodes, np.random.default_rng(1))
    assert not as_set(neg) & known
    assert (neg[:, 0] != neg[:, 1]).all()
    below = np.bincount(closure[:, 1], minlength=g.n_nodes)
    corrupted_hyponym = positives[below[positives[:, 1]] < g.n_nodes - 1]
    first, second = neg[:5 * len(corrupted_hyponym)], neg[5 * len(corrupted_hyponym):]
    assert len(second) == 5 * len(positives)
    for k, b in enumerate(corrupted_hyponym[:, 1]):  # (a', b): 5 distinct a'
        rows = first[5 * k:5 * k + 5]
        assert (rows[:, 1] == b).all() and len(set(rows[:, 0].tolist())) == 5
    for k, a in enumerate(positives[:, 0]):  # (a, b'): 5 distinct b'
        rows = second[5 * k:5 * k + 5]
        assert (rows[:, 0] == a).all() and len(set(rows[:, 1].tolist())) == 5


def test_negatives_skip_a_kept_hypernym_above_every_node() -> None:
    # node 0 lies above all others: (a', 0) negatives cannot exist, only (a, b') ones are drawn
    edges = np.array([[k, 0] for k in range(1, 12)] + [[k, 1] for k in range(6, 12)])
    closure = transitive_closure(edges, 12)
    positives = np.array([[7, 0]])
    neg = ganea_negatives(positives, closure, 12, np.random.default_rng(0))
    assert len(neg) == 5 and (neg[:, 0] == 7).all() and not as_set(neg) & as_set(closure)


def direct_f1(errors: np.ndarray, labels: np.ndarray, t: float) -> float:
    tp = np.sum((errors <= t) & labels)
    fp = np.sum((errors <= t) & ~labels)
    fn = np.sum((errors > t) & labels)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def ganea_scan(errors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Their eval.py's threshold search, without its 1e-6 guards: sorted (score, label), negatives first on ties."""
    best_f1, best_t, tp, fp = -1.0, 0.0, 0.0, 0.0
    n_pos = labels.sum()
    for score, label in sorted(zip(errors.tolist(), labels.astype(float).tolist())):
        tp += label
        fp += 1 - label
        f1 = 2 * tp / (tp + fp + n_pos)
        if f1 > best_f1:
            best_f1, best_t = f1, score
    return best_t, best_f1


def test_best_f1_threshold_against_every_threshold_and_their_scan() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(2, 40))
        errors = rng.integers(0, 8, n).astype(float)  # many ties
        labels = rng.random(n) < 0.3
        labels[0] = True
        t, f1 = best_f1_threshold(errors, labels)
        assert f1 == pytest.approx(max(direct_f1(errors, labels, c) for c in np.unique(errors)))
        assert f1 == pytest.approx(direct_f1(errors, labels, t))
        assert (t, f1) == pytest.approx(ganea_scan(errors, labels))


def test_precision_recall_f1_by_hand() -> None:
    errors = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    labels = np.array([True, False, True, False, True])
    p, r, f = precision_recall_f1(errors, labels, 0.3)  # predicted: 0.1, 0.2, 0.3 -> tp 2, fp 1, fn 1
    assert (p, r, f) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert precision_recall_f1(errors, labels, 0.0) == (0.0, 0.0, 0.0)


def brute_reconstruction(emb: np.ndarray, closure: np.ndarray, method: str) -> tuple[float, float]:
    """Every hypernym's rank among the non-hypernyms (ties count half) and each synset's average precision."""
    n = len(emb)
    above: dict[int, set[int]] = {}
    for a, b in closure.tolist():
        above.setdefault(a, set()).add(b)
    ranks, aps = [], []
    for u, ups in above.items():
        if method == "order":
            e = np.array([np.sum(np.maximum(0.0, emb[v] - emb[u]) ** 2) for v in range(n)])
        else:
            e = np.array([1 - emb[u] @ emb[v] / np.linalg.norm(emb[u]) / np.linalg.norm(emb[v]) for v in range(n)])
        others = [v for v in range(n) if v != u and v not in ups]
        precisions = []
        for v in ups:
            ranks.append(1 + sum(e[w] < e[v] for w in others) + 0.5 * sum(e[w] == e[v] for w in others))
            hits = sum(e[w] <= e[v] for w in ups)
            precisions.append(hits / (hits + sum(e[w] <= e[v] for w in others)))
        aps.append(np.mean(precisions))
    return float(np.mean(ranks)), float(np.mean(aps))


@pytest.mark.parametrize("method", ["order", "cosine"])
def test_reconstruction_against_brute_force(method: str) -> None:
    rng = np.random.default_rng(4)
    g = random_dag(30, 20, 2)
    closure = transitive_closure(g.edges, g.n_nodes)
    if method == "order":
        emb = rng.integers(0, 3, (g.n_nodes, 3)).astype(np.float32)  # small integers: many equal errors
    else:  # float32 rounding would break ties of cosines differently from the float64 brute force
        emb = rng.normal(size=(g.n_nodes, 3)).astype(np.float32)
    expected = brute_reconstruction(emb.astype(np.float64), closure, method)
    m = reconstruction_metrics(emb, closure, method)
    assert (m["mean_rank"], m["map"]) == pytest.approx(expected, rel=1e-6)
    some = np.unique(closure[:, 0])[::3]
    part = brute_reconstruction(emb.astype(np.float64), closure[np.isin(closure[:, 0], some)], method)
    m = reconstruction_metrics(emb, closure, method, nodes=some)
    assert (m["mean_rank"], m["map"]) == pytest.approx(part, rel=1e-6)


def test_reconstruction_of_a_perfect_embedding() -> None:
    # a chain 0 <- 1 <- 2 <- 3 embedded as 0, 1, 2, 3: every hypernym has error 0, every other synset > 0
    closure = transitive_closure(np.array([[1, 0], [2, 1], [3, 2]]), 4)
    emb = np.arange(4, dtype=np.float32)[:, None]
    assert reconstruction_metrics(emb, closure, "order") == {"mean_rank": 1.0, "map": 1.0}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["hypernym", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, message", [
    (["--percent", "50"], "--percent applies only to --protocol ganea"),
    (["--protocol", "reconstruction", "--percent", "10"], "--percent applies only to --protocol ganea"),
    (["--protocol", "ganea"], "--protocol ganea needs --percent"),
    (["--protocol", "ganea", "--percent", "50", "--dev-size", "10"], "--dev-size applies only to --protocol vendrov"),
    (["--protocol", "ganea", "--percent", "33"], "33 is not supported (only 0, 10, 25, 50, 90)"),
    (["--protocol", "poincare"], "'poincare' is not supported"),
])
def test_bad_protocol_options_give_one_line(capsys, tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *args, "--save_dir", str(tmp_path))
    assert code != 0 and message in err
    assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err  # argparse adds its usage line
    assert not any(tmp_path.iterdir())


needs_wordnet = pytest.mark.skipif(not (WORDNET / "data.noun").exists(), reason="WordNet 3.0 not installed")


@needs_wordnet
def test_wordnet_counts_match_ganea_et_al_files() -> None:
    # their data/maxn/mammal_closure.tsv.*: 1,179 synsets (.vocab), 5,361 closure edges, 1,176 basic
    # (train_0percent), 209 validation edges
    s = ganea_split(without_root(read_wordnet(WORDNET), "mammal.n.01"), 0, seed=0)
    assert s.data.graph.n_nodes == 1179
    assert (len(s.data.closure), len(s.basic), len(s.data.dev), len(s.data.test)) == (5361, 1176, 209, 209)
    assert len(s.data.dev_negatives) == 10 * 209


@needs_wordnet
def test_ganea_quick_run_folder(capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "--protocol", "ganea", "--percent", "25", "--root", "mammal.n.01", "--dim", "5",
                             "--max_epochs", "3", "--batch_size", "200", "--save_dir", str(tmp_path), "--name", "g",
                             "--quiet", "--json", str(tmp_path / "g.json"))
    assert code == 0, err
    run = tmp_path / "g"
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "hypernym" and config["protocol"]["name"] == "ganea"
    assert config["protocol"]["percent"] == 25 and config["protocol"]["root"] == "mammal.n.01"
    results = json.loads((run / "results.json").read_text())
    assert results == json.loads((tmp_path / "g.json").read_text())
    assert results["models"]["transitive_closure"]["test_f1"] == 100.0  # the basic edges' closure is every edge
    order = results["models"]["order"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid" and r["model"] == "order"]
    assert max(r["dev_f1"] for r in valid) == pytest.approx(order["dev_f1"])
    assert records[-1]["event"] == "finished"
    # test figures again from the saved embeddings and the recorded threshold
    emb = load_embeddings(run)
    s = ganea_split(without_root(read_wordnet(WORDNET), "mammal.n.01"), 25, seed=0)
    names = [emb.names[k] for k in range(len(emb.names))]
    pairs = [(names[a], names[b]) for a, b in np.concatenate([s.data.test, s.data.test_negatives])]
    labels = np.r_[np.ones(len(s.data.test), bool), np.zeros(len(s.data.test_negatives), bool)]
    p, r, f = precision_recall_f1(emb.errors(pairs), labels, emb.thresholds["order"])
    assert (100 * p, 100 * r, 100 * f) == pytest.approx((order["test_precision"], order["test_recall"], order["test_f1"]))
    assert "order-embeddings" in out and f"{order['test_f1']:.2f}" in out


@needs_wordnet
def test_reconstruction_quick_run_folder(capsys, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "--protocol", "reconstruction", "--root", "mammal.n.01", "--dim", "5",
                             "--max_epochs", "2", "--no-symmetric", "--save_dir", str(tmp_path), "--name", "r", "--quiet")
    assert code == 0, err
    run = tmp_path / "r"
    assert json.loads((run / "config.json").read_text())["protocol"]["name"] == "reconstruction"
    order = json.loads((run / "results.json").read_text())["models"]["order"]
    g = read_wordnet(WORDNET).descendants("mammal.n.01")
    m = reconstruction_metrics(load_embeddings(run).embeddings["order"], transitive_closure(g.edges, g.n_nodes), "order")
    assert (m["mean_rank"], 100 * m["map"]) == pytest.approx((order["mean_rank"], order["map"]))
