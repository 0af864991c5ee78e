"""The contrastive loss and the two measures against direct formulas."""
import numpy as np
import pytest
import torch

from order_embedding import measures
from order_embedding.loss import contrastive_loss


def direct_order(s, im):
    return np.array([[sum(max(0.0, a - b) ** 2 for a, b in zip(si, ii)) for ii in im] for si in s])


def direct_loss(E, margin, hardest):
    n = len(E)
    total = 0.0
    for a in range(n):
        im_terms = [max(0.0, margin - E[a, b] + E[a, a]) for b in range(n) if b != a]
        s_terms = [max(0.0, margin - E[b, a] + E[a, a]) for b in range(n) if b != a]
        total += (max(im_terms) + max(s_terms)) if hardest else (sum(im_terms) + sum(s_terms))
    return total


def test_order_errors_hand_case():
    s = np.array([[0.5, 0.0], [0.1, 0.9]], np.float32)
    im = np.array([[0.6, 0.1], [0.0, 0.3]], np.float32)
    # caption 0 <= image 0 everywhere: no violation; caption 1 vs image 1: 0.1^2 + 0.6^2
    expected = np.array([[0.0, 0.25], [0.64, 0.01 + 0.36]])
    np.testing.assert_allclose(measures.order_errors(s, im), expected, rtol=1e-6)
    np.testing.assert_allclose(measures.order_errors(torch.tensor(s), torch.tensor(im)).numpy(), expected, rtol=1e-6)


def test_measures_keep_type_and_match_formula():
    rng = np.random.default_rng(0)
    s, im = rng.random((7, 5)).astype(np.float32), rng.random((4, 5)).astype(np.float32)
    e = measures.order_errors(s, im)
    assert isinstance(e, np.ndarray) and e.shape == (7, 4)
    np.testing.assert_allclose(e, direct_order(s, im), rtol=1e-5)
    c = measures.cosine_errors(torch.tensor(s), torch.tensor(im))
    assert isinstance(c, torch.Tensor)
    np.testing.assert_allclose(c.numpy(), -(s @ im.T), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown measure"):
        measures.measure("euclid")


@pytest.mark.parametrize("method,margin", [("order", 0.05), ("cosine", 0.2)])
@pytest.mark.parametrize("hardest", [False, True])
def test_contrastive_loss_matches_direct_sum(method, margin, hardest):
    rng = np.random.default_rng(1)
    s = np.abs(rng.normal(size=(6, 4))) * 0.3
    im = np.abs(rng.normal(size=(6, 4))) * 0.3
    E = direct_order(s, im) if method == "order" else -(s @ im.T)
    got = contrastive_loss(torch.tensor(s), torch.tensor(im), method, margin, max_violation=hardest)
    assert got.item() == pytest.approx(direct_loss(E, margin, hardest), rel=1e-9)


def test_loss_zero_when_pairs_are_perfect_and_gradient_flows():
    # Each caption sits below its own image only: E[a,a] = 0, E[a,b] >= 1 for a != b.
    s = torch.eye(3, requires_grad=True)
    im = (torch.eye(3) * 1.0).requires_grad_()
    loss = contrastive_loss(s * 2, im, "order", 0.05)
    assert loss.item() == 0.0
    s2 = torch.full((3, 3), 0.5, requires_grad=True)
    loss2 = contrastive_loss(s2, torch.rand(3, 3), "order", 0.05)
    loss2.backward()
    assert s2.grad is not None and torch.isfinite(s2.grad).all()


@pytest.mark.parametrize("hardest", [False, True])
def test_loss_gradients_through_the_kernels_match_float64_broadcasting(hardest):
    torch.manual_seed(0)
    s0, im0 = torch.rand(16, 40), torch.rand(16, 40)
    s, im = s0.clone().requires_grad_(), im0.clone().requires_grad_()
    loss = contrastive_loss(s, im, "order", 0.3, max_violation=hardest)
    assert any("OrderErrorMatrix" in type(f).__name__ for f in _graph(loss))  # the kernels, not broadcasting
    loss.backward()
    s64, im64 = s0.double().requires_grad_(), im0.double().requires_grad_()
    errors = (s64.unsqueeze(1) - im64.unsqueeze(0)).clamp(min=0).pow(2).sum(-1)  # broadcasting, float64
    diagonal = errors.diagonal()
    off = ~torch.eye(16, dtype=torch.bool)
    cost_im = (0.3 - errors + diagonal.view(-1, 1)).clamp(min=0) * off
    cost_s = (0.3 - errors + diagonal.view(1, -1)).clamp(min=0) * off
    ref = (cost_im.max(1).values.sum() + cost_s.max(0).values.sum()) if hardest else cost_im.sum() + cost_s.sum()
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(s.grad.numpy(), s64.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(im.grad.numpy(), im64.grad.numpy(), rtol=1e-4, atol=1e-5)


def _graph(t):
    """Every autograd node below t."""
    seen, todo = [], [t.grad_fn]
    while todo:
        f = todo.pop()
        if f is not None and f not in seen:
            seen.append(f)
            todo += [g for g, _ in f.next_functions]
    return seen


def test_loss_rejects_misaligned_batches():
    with pytest.raises(ValueError, match="differ in shape"):
        contrastive_loss(torch.zeros(3, 2), torch.zeros(4, 2))


def direct_matched_loss(E, M, margin, hardest):
    """Each caption's terms averaged over the images it describes, and each image's over its captions."""
    n = len(E)
    total = 0.0
    for side in (E, E.T):
        known = M if side is E else M.T
        for a in range(n):
            positives = [p for p in range(n) if known[a, p]]
            per = []
            for p in positives:
                terms = [max(0.0, margin - side[a, q] + side[a, p]) for q in range(n) if not known[a, q]]
                per.append((max(terms) if hardest else sum(terms)) if terms else 0.0)
            total += sum(per) / len(per)
    return total


@pytest.mark.parametrize("method,margin", [("order", 0.05), ("cosine", 0.2)])
@pytest.mark.parametrize("hardest", [False, True])
def test_contrastive_loss_with_known_matches_matches_direct_sum(method, margin, hardest):
    rng = np.random.default_rng(2)
    s = np.abs(rng.normal(size=(7, 4))) * 0.3
    im = np.abs(rng.normal(size=(7, 4))) * 0.3
    M = rng.random((7, 7)) < 0.3
    np.fill_diagonal(M, True)
    M[0] = True  # a caption that describes every image has no negatives
    E = direct_order(s, im) if method == "order" else -(s @ im.T)
    got = contrastive_loss(torch.tensor(s), torch.tensor(im), method, margin, hardest, matches=torch.tensor(M))
    assert got.item() == pytest.approx(direct_matched_loss(E, M, margin, hardest), rel=1e-9)
    # with only the pairing known, the loss is the paper's
    plain = contrastive_loss(torch.tensor(s), torch.tensor(im), method, margin, hardest,
                             matches=torch.eye(7, dtype=torch.bool))
    assert plain.item() == pytest.approx(direct_loss(E, margin, hardest), rel=1e-9)
    with pytest.raises(ValueError, match="true diagonal"):
        contrastive_loss(torch.tensor(s), torch.tensor(im), method, margin, matches=torch.zeros(7, 7, dtype=torch.bool))
