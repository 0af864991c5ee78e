"""Pixel backbones: CNNs that turn image batches into ``dim_image``-wide feature rows."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a backbone factory ``f(dim_image, **options) -> nn.Module`` to the registry."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = factory
        return factory

    return add


def build_backbone(name: str, dim_image: int, **options) -> nn.Module:
    """An instance of the named backbone producing ``dim_image`` features per image."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](dim_image, **options)


@register_backbone("small_cnn")
def small_cnn(dim_image: int, width: int = 32, image_size: int = 64) -> nn.Module:
    """A four-block CNN for small images (the demo's shapes world), ending in a ReLU feature layer."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    side = image_size // 16
    return nn.Sequential(
        *block(3, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        *block(4 * width, 4 * width),
        nn.Flatten(),
        nn.Linear(4 * width * side * side, dim_image),
        nn.ReLU(inplace=True),
    )
