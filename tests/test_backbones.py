"""The small CNN against the same layers written out as channels-first functional calls."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from order_embedding.backbones import build_backbone


def direct_small_cnn(net: torch.nn.Module, images: torch.Tensor, training: bool) -> torch.Tensor:
    """The four conv, batch-norm, ReLU and max-pool blocks and the ReLU feature layer, on channels-first images."""
    layers = list(net)
    x = images
    for k in range(4):
        conv, norm = layers[4 * k], layers[4 * k + 1]
        x = F.conv2d(x, conv.weight, conv.bias, padding=1)
        x = F.batch_norm(x, norm.running_mean.clone(), norm.running_var.clone(), norm.weight, norm.bias,
                         training=training, eps=norm.eps)
        x = F.max_pool2d(F.relu(x), 2)
    linear = layers[-2]
    return F.relu(F.linear(x.flatten(1), linear.weight, linear.bias))


@pytest.mark.parametrize("training", [True, False])
def test_small_cnn_equals_channels_first_layers(training: bool) -> None:
    torch.manual_seed(0)
    net = build_backbone("small_cnn", 24, width=4, image_size=32)
    for module in net:
        if isinstance(module, torch.nn.BatchNorm2d):  # running statistics other than the initial 0 and 1
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.rand(5, 3, 32, 32)
    expected = direct_small_cnn(net, images, training)
    net.train(training)
    with torch.no_grad():
        got = net(images)
    assert got.shape == (5, 24)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
