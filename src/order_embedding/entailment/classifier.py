"""Scoring sentence pairs with a trained entailment run: load it, compute errors, predict entailment."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import runs
from ..vocab import Vocabulary
from .experiment import sentence_errors
from .model import EntailmentModel, EntailmentModelConfig
from .snli import tokenize


@dataclass
class EntailmentClassifier:
    """One variant of an entailment run: network, vocabulary and the threshold chosen on dev."""

    net: EntailmentModel
    vocab: Vocabulary
    threshold: float
    variant: str
    run_dir: Path


def load_entailment(run_dir: str | os.PathLike, variant: str = "order",
                    device: str | torch.device = "cpu") -> EntailmentClassifier:
    """Read a run folder of ``order-embedding entailment``; ``variant`` is ``order`` or ``symmetric``."""
    run_dir = Path(run_dir)
    cfg = runs.load_config(run_dir / runs.CONFIG)
    if not isinstance(cfg, dict) or cfg.get("kind") != "entailment":
        kind = cfg.get("kind") if isinstance(cfg, dict) else None
        raise runs.RunError(f"{run_dir} is a {kind!r} run, not an entailment run")
    model = cfg.get("model") or {}
    trained = model.get("methods") or {}
    if variant not in trained:
        raise runs.RunError(f"{run_dir}: no {variant!r} model (it has {sorted(trained)})")
    try:
        config = EntailmentModelConfig(n_words=model["n_words"], dim_word=model["dim_word"], dim=model["dim"],
                                       method=trained[variant])
    except (KeyError, TypeError, ValueError) as e:
        raise runs.RunError(f"{run_dir / runs.CONFIG}: bad model section ({e})") from None
    vocab = Vocabulary.load(run_dir / runs.VOCAB)
    tensors, meta = runs.load_tensors(run_dir / runs.BEST)
    prefix = f"{variant}."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    threshold = (meta.get("thresholds") or {}).get(variant)
    if not state or threshold is None:
        raise runs.RunError(f"{run_dir / runs.BEST}: no saved {variant!r} model")
    net = EntailmentModel(config)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise runs.RunError(f"{run_dir / runs.BEST}: parameters do not match the config ({str(e).splitlines()[0]})") from None
    return EntailmentClassifier(net.to(device).eval(), vocab, float(threshold), variant, run_dir)


def entailment_errors(model: EntailmentClassifier, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """Error of each (premise, hypothesis) pair of raw sentences (tokenised as the data were); low means entailed."""
    return sentence_errors(model.net, model.vocab, [tokenize(s) for s in premises], [tokenize(s) for s in hypotheses])


def predict_entailment(model: EntailmentClassifier, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
    """Whether each premise entails its hypothesis: error at most the run's dev threshold."""
    return entailment_errors(model, premises, hypotheses) <= model.threshold
