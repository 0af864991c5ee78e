"""Pixel backbones: CNNs that turn image batches into ``dim_image``-wide feature rows."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a backbone factory ``f(dim_image, load_weights=True, **options) -> nn.Module`` to the registry.

    ``load_weights=False`` asks for the architecture alone, for a caller that loads a saved state into it.
    """

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = factory
        return factory

    return add


def build_backbone(name: str, dim_image: int, load_weights: bool = True, **options) -> nn.Module:
    """An instance of the named backbone producing ``dim_image`` features per image; with ``load_weights``
    False, no pretrained or file weights are fetched or read."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](dim_image, load_weights=load_weights, **options)


#: Side of the square images the small CNN reads unless its ``image_size`` option says otherwise.
SMALL_CNN_IMAGE_SIZE = 64


class SmallCNN(nn.Sequential):
    """:func:`small_cnn`'s layers, run on channels-last images: on CPU its convolutions and max pooling take
    about half the time they take on channels-first ones (``benchmarks/bench_demo.py``). The features are the
    same, up to float rounding."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images.contiguous(memory_format=torch.channels_last))


@register_backbone("small_cnn")
def small_cnn(dim_image: int, width: int = 32, image_size: int = SMALL_CNN_IMAGE_SIZE,
              load_weights: bool = True) -> nn.Module:
    """A four-block CNN for small images (the demo's shapes world), ending in a ReLU feature layer.

    It has no pretrained weights, so ``load_weights`` changes nothing.
    """

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    side = image_size // 16
    return SmallCNN(
        *block(3, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        *block(4 * width, 4 * width),
        nn.Flatten(),
        nn.Linear(4 * width * side * side, dim_image),
        nn.ReLU(inplace=True),
    )


# ---------------------------------------------------------------- torchvision networks

#: torchvision networks usable as feature extractors and image backbones, with their feature width:
#: VGG nets give fc7 after its ReLU, ResNets the global average pool.
TORCHVISION_DIMS: dict[str, int] = {
    "vgg16": 4096,
    "vgg19": 4096,
    "resnet18": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
}

def is_torchvision_backbone(name: str | None) -> bool:
    """Whether ``name`` is one of the torchvision backbones (as opposed to a small pixel CNN or none)."""
    return name in TORCHVISION_DIMS


def _torchvision():
    try:
        import torchvision
    except ImportError:
        raise ValueError("torchvision backbones need torchvision: pip install 'order-embedding[vision]'") from None
    return torchvision


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a tensors-only torch file."""
    if not path.is_file():
        raise ValueError(f"weights file {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file becomes one clear error
        raise ValueError(f"weights file {path}: cannot read it ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path}: expected a state dict of tensors")
    return state


def torchvision_features(name: str, weights: str = "imagenet", seed: int = 0) -> nn.Module:
    """The named torchvision network cut at its feature layer, with ImageNet, random or a file's weights.

    ``weights``: ``"imagenet"`` (torchvision's default weights, fetched into its cache on
    first use), ``"none"`` (random, seeded by ``seed``) or the path of a state dict of the
    full torchvision classifier (``.pth`` or ``.safetensors``).
    """
    if name not in TORCHVISION_DIMS:
        raise ValueError(f"unknown torchvision backbone {name!r}; choose one of {sorted(TORCHVISION_DIMS)}")
    tv = _torchvision()
    if weights == "imagenet":
        net = tv.models.get_model(name, weights="DEFAULT")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = tv.models.get_model(name, weights=None)
        if weights not in ("imagenet", "none"):
            path = Path(weights)
            try:
                net.load_state_dict(_read_state(path))
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise ValueError(f"weights file {path} does not fit {name}: {first}") from None
    if name.startswith("vgg"):
        net.classifier = net.classifier[:5]  # fc6, ReLU, dropout, fc7, ReLU
    else:
        net.fc = nn.Identity()
    return net


class TorchvisionBackbone(nn.Module):
    """A torchvision feature network, frozen (eval mode, no gradients) or fine-tuned.

    Input: normalised image batches ``B x 3 x H x W``, or ``B x n x 3 x H x W`` for ``n``
    crops per image, whose features are averaged.
    """

    def __init__(self, name: str, weights: str = "imagenet", finetune: bool = False) -> None:
        super().__init__()
        self.net = torchvision_features(name, weights)
        self.finetune = bool(finetune)
        if not self.finetune:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> TorchvisionBackbone:
        """Training mode for a fine-tuned network; a frozen one stays in eval mode (batch norm statistics kept)."""
        super().train(mode)
        if not self.finetune:
            self.net.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Feature rows, one per image (the mean over its crops for 5-D input)."""
        if images.dim() == 5:
            b, n = images.shape[:2]
            return self.net(images.flatten(0, 1)).view(b, n, -1).mean(dim=1)
        return self.net(images)


def _torchvision_factory(name: str) -> Callable[..., nn.Module]:
    def factory(
        dim_image: int,
        load_weights: bool = True,
        weights: str = "imagenet",
        finetune: bool = False,
        image_size: int = 224,
        resize_size: int = 256,
        crops: int = 10,
        workers: int = 0,
    ) -> nn.Module:
        """``name`` from torchvision; ``image_size``/``resize_size``/``crops``/``workers`` configure image loading."""
        if dim_image != TORCHVISION_DIMS[name]:
            width = TORCHVISION_DIMS[name]
            raise ValueError(f"backbone {name} gives {width}-d features; set dim_image to {width}")
        if crops not in (1, 10):
            raise ValueError(f"crops must be 1 or 10, not {crops!r}")
        if not 0 < image_size <= resize_size:
            raise ValueError(f"need 0 < image_size <= resize_size, got {image_size} and {resize_size}")
        return TorchvisionBackbone(name, weights if load_weights else "none", finetune)

    return factory


for _name in TORCHVISION_DIMS:
    register_backbone(_name)(_torchvision_factory(_name))
