"""The encoders against an independent NumPy implementation of the original's equations."""
import numpy as np
import pytest
import torch

from order_embedding.batching import pad_batch
from order_embedding.model import ModelConfig, OrderEmbeddingModel


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_sentence(net, ids):
    """The original GRU: token steps, then one end-of-sentence step; L2-normalise (and abs)."""
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in net.state_dict().items()}
    d = net.config.dim
    Wih, bih, Whh = sd["text.gru.weight_ih_l0"], sd["text.gru.bias_ih_l0"], sd["text.gru.weight_hh_l0"]
    W_r, W_u, Wx = Wih[:d].T, Wih[d:2 * d].T, Wih[2 * d:].T
    U_r, U_u, Ux = Whh[:d].T, Whh[d:2 * d].T, Whh[2 * d:].T
    b_r, b_u, bx = bih[:d], bih[d:2 * d], bih[2 * d:]
    h = np.zeros(d)
    for t in list(ids) + [0]:
        x = sd["text.embedding.weight"][t]
        r = sigmoid(x @ W_r + b_r + h @ U_r)
        u = sigmoid(x @ W_u + b_u + h @ U_u)
        c = np.tanh(x @ Wx + bx + r * (h @ Ux))
        h = u * h + (1 - u) * c
    v = h / np.linalg.norm(h)
    return np.abs(v) if net.config.abs else v


def test_sentence_encoder_matches_original_equations():
    torch.manual_seed(0)
    for abs_ in (True, False):
        net = OrderEmbeddingModel(ModelConfig(n_words=20, dim_word=5, dim=7, dim_image=9, abs=abs_,
                                              method="order" if abs_ else "cosine"))
        with torch.no_grad():  # non-zero biases so they are exercised
            net.text.gru.bias_ih_l0.normal_()
        sents = [[3, 4, 5], [7], [], [2, 19, 8, 8, 11]]
        tokens, lengths = pad_batch(sents)
        got = net.encode_text(tokens, lengths).detach().numpy()
        for row, ids in zip(got, sents):
            np.testing.assert_allclose(row, numpy_sentence(net, ids), atol=1e-6)


def test_image_encoder_and_orthant():
    torch.manual_seed(1)
    net = OrderEmbeddingModel(ModelConfig(n_words=5, dim_word=3, dim=4, dim_image=6))
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    got = net.encode_image(torch.tensor(x)).detach().numpy()
    W, b = net.image.fc.weight.detach().numpy(), net.image.fc.bias.detach().numpy()
    y = x @ W.T + b
    np.testing.assert_allclose(got, np.abs(y / np.linalg.norm(y, axis=1, keepdims=True)), atol=1e-6)
    assert (got >= 0).all()


def test_initialisation_rules():
    torch.manual_seed(2)
    net = OrderEmbeddingModel(ModelConfig(n_words=50, dim_word=8, dim=6, dim_image=10))
    emb = net.text.embedding.weight.detach()
    assert emb.abs().max() <= 0.1 and net.text.gru.weight_ih_l0.abs().max() <= 0.1
    Whh = net.text.gru.weight_hh_l0.detach()
    for k in range(3):
        block = Whh[6 * k : 6 * (k + 1)]
        torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)
    assert not net.text.gru.bias_hh_l0.requires_grad and (net.text.gru.bias_hh_l0 == 0).all()
    assert (net.text.gru.bias_ih_l0 == 0).all() and (net.image.fc.bias == 0).all()
    bound = np.sqrt(6 / (10 + 6))
    assert net.image.fc.weight.abs().max() <= bound


def test_config_sizes_follow_the_whole_number_rule():
    config = ModelConfig(n_words=np.int64(20), dim_word=np.int32(5), dim=7, dim_image=9)
    assert all(type(getattr(config, k)) is int for k in ("n_words", "dim_word", "dim", "dim_image"))
    assert config.to_dict()["n_words"] == 20
    for bad in (0, 7.0, True, "7"):
        with pytest.raises(ValueError, match="dim must be a whole number"):
            ModelConfig(n_words=20, dim=bad)
