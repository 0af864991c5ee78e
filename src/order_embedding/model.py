"""The caption and image encoders and the joint model of the paper."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from .backbones import build_backbone
from .measures import measure
from .options import positive_int


@dataclass
class ModelConfig:
    """Architecture hyperparameters, named as in the original project."""

    n_words: int
    dim_word: int = 300
    dim: int = 1024
    dim_image: int = 4096
    method: str = "order"
    abs: bool = True
    encoder: str = "gru"
    #: ``None`` for precomputed CNN features; otherwise a pixel backbone name from
    #: :mod:`order_embedding.backbones` whose output (``dim_image`` wide) feeds the linear map.
    backbone: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("n_words", "dim_word", "dim", "dim_image"):
            setattr(self, name, positive_int(getattr(self, name), name, allow_text=False))
        if not isinstance(self.method, str):
            raise ValueError(f"method must be a measure name, got {self.method!r}")
        measure(self.method)
        if self.encoder != "gru":
            raise ValueError(f"encoder {self.encoder!r} is not supported (only 'gru')")
        if not isinstance(self.abs, bool):
            raise ValueError(f"abs must be true or false, got {self.abs!r}")
        if self.backbone is not None and not isinstance(self.backbone, str):
            raise ValueError(f"backbone must be a backbone name or null, got {self.backbone!r}")
        if not isinstance(self.backbone_options, dict) or not all(isinstance(k, str) for k in self.backbone_options):
            raise ValueError(f"backbone_options must be a JSON object, got {self.backbone_options!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys by name."""
        if not isinstance(d, dict):
            raise ValueError(f"the model section must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
        return cls(**d)


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


class SentenceEncoder(nn.Module):
    """Word table and one-layer GRU; the sentence vector is the state after the end-of-sentence step.

    ``nn.GRU`` computes the original's GRU when the candidate's hidden bias is zero,
    so ``gru.bias_hh_l0`` is kept at zero and out of training.
    """

    def __init__(self, n_words: int, dim_word: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_words, dim_word)
        self.gru = nn.GRU(dim_word, dim, batch_first=True)
        self.gru.bias_hh_l0.requires_grad_(False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The original's initialisation: uniform(-0.1, 0.1) inputs, orthogonal recurrences, zero biases."""
        dim = self.gru.hidden_size
        with torch.no_grad():
            self.embedding.weight.uniform_(-0.1, 0.1)
            self.gru.get_parameter("weight_ih_l0").uniform_(-0.1, 0.1)
            for k in range(3):
                nn.init.orthogonal_(self.gru.get_parameter("weight_hh_l0")[k * dim : (k + 1) * dim])
            self.gru.get_parameter("bias_ih_l0").zero_()
            self.gru.get_parameter("bias_hh_l0").zero_()

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final GRU states for padded ``tokens`` (batch x time, end-of-sentence included) of ``lengths``."""
        x = self.embedding(tokens)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        return h[0]


class ImageEncoder(nn.Module):
    """Affine map of (L2-normalised) CNN features, optionally preceded by a pixel backbone."""

    def __init__(self, dim_image: int, dim: int, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(dim_image, dim)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image vectors (before normalisation) for features or pixel batches."""
        if self.backbone is not None:
            images = l2norm(self.backbone(images))
        return self.fc(images)


class OrderEmbeddingModel(nn.Module):
    """Maps captions and images into a shared space: unit vectors, non-negative for the order model."""

    def __init__(self, config: ModelConfig, load_weights: bool = True) -> None:
        """``load_weights`` False builds a pixel backbone without fetching or reading its pretrained weights."""
        super().__init__()
        self.config = config
        backbone = None
        if config.backbone is not None:
            backbone = build_backbone(config.backbone, config.dim_image, load_weights, **config.backbone_options)
        self.text = SentenceEncoder(config.n_words, config.dim_word, config.dim)
        self.image = ImageEncoder(config.dim_image, config.dim, backbone)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = l2norm(x)
        return x.abs() if self.config.abs else x

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Caption embeddings from padded token ids and lengths (end-of-sentence counted)."""
        return self._finish(self.text(tokens, lengths))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings from CNN features (or pixels when the model has a backbone)."""
        return self._finish(self.image(images))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(captions, images)`` embeddings of an aligned batch."""
        return self.encode_text(tokens, lengths), self.encode_image(images)
