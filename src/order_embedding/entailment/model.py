"""The entailment model: the core's sentence encoder on both sentences of a pair, and an error.

The order model takes the absolute value of the final GRU state as a sentence's vector
(no L2 normalisation, as the original's entailment branch) and scores a pair by the
order violation ``E(premise, hypothesis) = sum_i max(0, hypothesis_i - premise_i)^2``:
the hypothesis, the more general sentence, should lie below its premise in every
coordinate. The symmetric variant L2-normalises the state and uses the cosine distance
``1 - premise . hypothesis`` (half the squared distance of the unit vectors), the same for
both directions. Both errors are non-negative and zero for a perfect pair, so one margin
means the same for both: with ``-cos`` instead, a margin of 0.2 would ask every pair that is
not entailed for a negative cosine, which the model meets by parking all pairs at the margin.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn

from .. import measures
from ..model import SentenceEncoder, l2norm
from ..options import positive_int


@measures.measure_keyword
@dataclass
class EntailmentModelConfig:
    """Architecture of one variant: vocabulary size, word and sentence dimensions, ``method``: the measure
    (``order`` or ``cosine``)."""

    n_words: int
    dim_word: int = 300
    dim: int = 1024
    method: str = "order"

    def __post_init__(self) -> None:
        self.method = measures.measure_name(self.method)
        for name in ("n_words", "dim_word", "dim"):
            setattr(self, name, positive_int(getattr(self, name), name))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EntailmentModelConfig:
        """Build from a dict, rejecting unknown keys by name (``measure`` is read as ``method``, its old name)."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)} - {"measure"})
        if unknown:
            raise ValueError(f"unknown model option(s): {', '.join(unknown)}")
        return cls(**d)


class EntailmentModel(nn.Module):
    """Sentence vectors from the core's :class:`~order_embedding.model.SentenceEncoder`, and pair errors."""

    def __init__(self, config: EntailmentModelConfig) -> None:
        super().__init__()
        self.config = config
        self.text = SentenceEncoder(config.n_words, config.dim_word, config.dim)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sentence vectors from padded token ids and lengths (end-of-sentence counted)."""
        h = self.text(tokens, lengths)
        return h.abs() if self.config.method == "order" else l2norm(h)

    def errors(self, premises: torch.Tensor, hypotheses: torch.Tensor) -> torch.Tensor:
        """Error of each aligned (premise, hypothesis) row pair; low means "entailed"."""
        return pair_errors(premises, hypotheses, self.config.method)


@measures.measure_keyword
def pair_errors(premises: torch.Tensor, hypotheses: torch.Tensor, method: str) -> torch.Tensor:
    """Row-wise errors under the measure ``method``: the hypothesis in the general (caption) role, the premise in
    the specific one.

    The cosine measure's error is its distance ``1 - cos``.
    """
    return measures.measure(method).distance(hypotheses, premises)
