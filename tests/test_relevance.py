"""Average precision and ROC over every true match, against hand-made cases and brute-force definitions."""
import numpy as np
import pytest

from order_embedding.relevance import average_precision, roc, roc_auc, roc_curve


def test_average_precision_hand_made():
    # Ranking by error: items 1, 0, 3, 2. Query 0 matches items 0 and 2, at ranks 2 and 4: (1/2 + 2/4) / 2.
    errors = np.array([[0.2, 0.1, 0.9, 0.5], [0.2, 0.1, 0.9, 0.5]])
    relevant = np.array([[True, False, True, False], [False, True, False, False]])
    assert average_precision(errors, relevant) == pytest.approx([0.5, 1.0])


def brute_average_precision(errors, relevant):
    out = []
    for e, r in zip(errors, relevant):
        ranked = sorted(range(len(e)), key=lambda j: (e[j], j))
        precisions = [sum(r[i] for i in ranked[:k + 1]) / (k + 1) for k, j in enumerate(ranked) if r[j]]
        out.append(np.mean(precisions))
    return np.array(out)


def brute_auc(errors, relevant):
    true, false = errors[relevant], errors[~relevant]
    return np.mean([1.0 if t < f else 0.5 if t == f else 0.0 for t in true for f in false])


@pytest.mark.parametrize("seed", range(4))
def test_against_brute_force_definitions(seed):
    rng = np.random.default_rng(seed)
    errors = rng.integers(0, 6, size=(7, 9)).astype(np.float32)  # many ties
    relevant = rng.random((7, 9)) < 0.4
    relevant[:, 0] = True
    assert average_precision(errors, relevant) == pytest.approx(brute_average_precision(errors, relevant))
    assert roc_auc(errors, relevant) == pytest.approx(brute_auc(errors, relevant))


def test_roc_curve_against_thresholds():
    rng = np.random.default_rng(5)
    errors = rng.integers(0, 8, size=(6, 10)).astype(np.float64)
    relevant = rng.random((6, 10)) < 0.3
    fpr, tpr = roc_curve(errors, relevant, points=21)
    # Every threshold t ("error <= t is a match") gives one (fpr, tpr); at each grid fpr the curve is the best
    # tpr among thresholds not above it.
    points = [(0.0, 0.0)] + [(np.mean(errors[~relevant] <= t), np.mean(errors[relevant] <= t))
                             for t in np.unique(errors)]
    expected = [max(tp for fp, tp in points if fp <= g + 1e-12) for g in fpr]
    assert fpr == pytest.approx(np.linspace(0, 1, 21))
    assert tpr == pytest.approx(expected)
    assert tpr[-1] == 1.0
    auc, fpr_together, tpr_together = roc(errors, relevant, points=21)
    assert auc == pytest.approx(brute_auc(errors, relevant))
    assert np.array_equal(fpr_together, fpr) and np.array_equal(tpr_together, tpr)


def test_perfect_and_reversed_scores():
    relevant = np.eye(4, dtype=bool)
    assert roc_auc(1.0 - relevant, relevant) == 1.0 and roc_auc(relevant * 1.0, relevant) == 0.0
    assert average_precision(1.0 - relevant, relevant) == pytest.approx(np.ones(4))


def test_bad_input():
    with pytest.raises(ValueError, match="matches no item"):
        average_precision(np.zeros((2, 3)), np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="both true and false"):
        roc_auc(np.zeros((2, 2)), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        roc_auc(np.zeros((2, 2)), np.ones((2, 3), dtype=bool))
