"""The entailment model's error and loss, the threshold rule and the baselines, against direct formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from order_embedding.batching import pad_batch
from order_embedding.entailment.experiment import (
    encode_split,
    majority_baseline,
    overlap_baseline,
    per_class,
    threshold_results,
    word_overlap,
)
from order_embedding.entailment.model import (
    EntailmentModel,
    EntailmentModelConfig,
    pair_errors,
)
from order_embedding.entailment.snli import Pairs
from order_embedding.loss import pair_hinge_loss
from order_embedding.vocab import Vocabulary


def test_order_error_puts_the_hypothesis_below_the_premise() -> None:
    rng = np.random.default_rng(0)
    p, h = rng.random((7, 5)), rng.random((7, 5))
    direct = (np.maximum(0, h - p) ** 2).sum(1)
    got = pair_errors(torch.from_numpy(p), torch.from_numpy(h), "order").numpy()
    np.testing.assert_allclose(got, direct)
    # a hypothesis whose every coordinate is at most the premise's costs nothing; the reverse does
    assert pair_errors(torch.tensor([[0.5, 0.9]]), torch.tensor([[0.2, 0.9]]), "order").item() == 0
    assert pair_errors(torch.tensor([[0.2, 0.9]]), torch.tensor([[0.5, 0.9]]), "order").item() == pytest.approx(0.09)


def test_symmetric_error_is_the_cosine_distance_either_way() -> None:
    p = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    h = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    # 1 - cos, which for unit vectors is half their squared Euclidean distance
    half_sq = 0.5 * ((p - h) ** 2).sum(1).numpy()
    np.testing.assert_allclose(pair_errors(p, h, "cosine").numpy(), half_sq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pair_errors(p, h, "cosine").numpy(), pair_errors(h, p, "cosine").numpy(), rtol=1e-6)
    # zero for the same direction, 2 for opposite ones
    u = torch.tensor([[0.6, 0.8]])
    assert pair_errors(u, u, "cosine").item() == pytest.approx(0, abs=1e-7)
    assert pair_errors(u, -u, "cosine").item() == pytest.approx(2)


def test_loss_is_the_summed_hinge() -> None:
    e = torch.tensor([0.0, 0.05, 0.3, 0.1, 0.25])
    y = torch.tensor([True, False, False, True, True])
    # y*E + (1-y)*max(0, 0.2-E): 0 + 0.15 + 0 + 0.1 + 0.25
    assert pair_hinge_loss(e, y, 0.2, "sum").item() == pytest.approx(0.5)


def test_config_takes_whole_numbers_only() -> None:
    for bad in (2.5, True, 0):
        with pytest.raises(ValueError, match="dim must be a whole number"):
            EntailmentModelConfig(n_words=10, dim=bad)
    assert EntailmentModelConfig(n_words=10, dim=3, method="symmetric").method == "cosine"


def test_sentence_vectors_are_the_absolute_final_gru_state() -> None:
    torch.manual_seed(0)
    net = EntailmentModel(EntailmentModelConfig(n_words=10, dim_word=4, dim=6, method="order"))
    tokens, lengths = pad_batch([[2, 3, 4], [5]])
    v = net.encode_text(tokens, lengths)
    # the state after the tokens and one end-of-sentence step, one sentence at a time through nn.GRU
    for row, ids in enumerate([[2, 3, 4, 0], [5, 0]]):
        _, h = net.text.gru(net.text.embedding(torch.tensor([ids])))
        torch.testing.assert_close(v[row], h[0, 0].abs())
    sym = EntailmentModel(EntailmentModelConfig(n_words=10, dim_word=4, dim=6, method="cosine"))
    torch.testing.assert_close(sym.encode_text(tokens, lengths).norm(dim=1), torch.ones(2))


def _encoded(labels, premises=None, hypotheses=None):
    n = len(labels)
    pairs = Pairs(premises or ["a"] * n, hypotheses or ["a"] * n, list(labels))
    return encode_split(pairs, Vocabulary.build(["a"]))


def test_threshold_is_chosen_on_dev_and_applied_to_test() -> None:
    dev = _encoded(["entailment", "entailment", "neutral", "contradiction"])
    test = _encoded(["entailment", "neutral", "entailment", "contradiction", "neutral"])
    dev_e = np.array([0.1, 0.2, 0.5, 0.6])       # best dev cut: between 0.2 and 0.5 -> 0.35
    test_e = np.array([0.3, 0.4, 0.45, 0.9, 0.05])
    r = threshold_results(dev_e, dev, test_e, test)
    assert r["threshold"] == pytest.approx(0.35) and r["dev_accuracy"] == 100
    # at 0.35: predicted entailed = [T, F, F, F, T]; right = [T, T, F, T, F] -> 60 %
    assert r["test_accuracy"] == pytest.approx(60)
    # the oracle: best cut on test itself; brute force over every cut
    best = max(np.mean((test_e <= t) == test.entailed) for t in np.r_[-1, test_e])
    assert r["oracle_test_accuracy"] == pytest.approx(100 * best)
    assert r["per_class"] == {"entailment": 50.0, "neutral": 50.0, "contradiction": 100.0}


def test_per_class_and_majority_by_hand() -> None:
    got = per_class(np.array([True, True, False, False]), ["entailment", "neutral", "neutral", "entailment"])
    assert got == {"entailment": 50.0, "neutral": 50.0, "contradiction": None}
    train = _encoded(["neutral", "entailment", "contradiction"])
    dev = _encoded(["entailment", "neutral"])
    test = _encoded(["entailment", "entailment", "entailment", "neutral"])
    m = majority_baseline(train, dev, test)
    assert (m["dev_accuracy"], m["test_accuracy"], m["oracle_test_accuracy"]) == (50, 25, 75)


def test_word_overlap_counts_hypothesis_tokens_found_in_the_premise() -> None:
    pairs = Pairs(["a red circle", "a red circle", "x"], ["a circle", "a blue circle big", ""], ["entailment"] * 3)
    np.testing.assert_allclose(word_overlap(pairs), [1.0, 0.5, 1.0])
    dev = _encoded(["entailment", "neutral", "neutral"], ["a b c"] * 3, ["a b", "a z", "z y"])
    test = _encoded(["entailment", "neutral"], ["a b c"] * 2, ["c", "a z"])
    r = overlap_baseline(dev, test)
    # dev overlaps 1, 0.5, 0: the cut between 1 and 0.5 (0.75) is right on all three
    assert r["threshold"] == pytest.approx(0.75) and r["dev_accuracy"] == 100 and r["test_accuracy"] == 100
