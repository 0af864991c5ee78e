"""The measure's parameter is called ``method`` everywhere; where it was called ``measure`` (hypernym and
entailment run folders, keyword arguments) the old name is still read: an older run folder loads and resumes
to the same end as an uninterrupted run, and an old keyword gives the same result with a deprecation notice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_ENTAILMENT, write_tiny_snli
from wordnet_files import TINY, write_wordnet

from order_embedding import runs
from order_embedding.entailment import experiment as entailment
from order_embedding.entailment import load_entailment, read_snli
from order_embedding.entailment.model import EntailmentModelConfig
from order_embedding.entailment.model import pair_errors as entailment_pair_errors
from order_embedding.hypernym import experiment as hypernym
from order_embedding.hypernym.wordnet import build_dataset, read_wordnet
from order_embedding.loss import contrastive_loss
from order_embedding.server.runs_view import RunFolders

OLD_KEYWORD = "the keyword 'measure' is now called 'method'"


def _with_old_keys(run: Path) -> dict:
    """Rewrite a run's ``config.json`` with the keys it had when the parameter was called ``measure``
    (``model.measures``, and ``train.<model>.measure`` where a model's options record it); returns the
    config as written with today's keys."""
    today = runs.load_json(run / runs.CONFIG)
    old = json.loads(json.dumps(today))
    old["model"]["measures"] = old["model"].pop("methods")
    for opts in old["train"].values():
        if "method" in opts:
            opts["measure"] = opts.pop("method")
    runs.save_json(run / runs.CONFIG, old)
    assert "methods" not in (run / runs.CONFIG).read_text()
    return today


class Interrupt(Exception):
    """Stands for a kill at a chosen update."""


def _interrupt_at(monkeypatch, module, name: str, call: int) -> None:
    real, count = getattr(module, name), {"n": 0}

    def wrapped(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def _same_tensors(a: Path, b: Path) -> None:
    ta, _ = runs.load_tensors(a)
    tb, _ = runs.load_tensors(b)
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _without_seconds(d):
    if isinstance(d, dict):
        return {k: _without_seconds(v) for k, v in d.items() if k != "seconds"}
    return d


def _hypernym_configs() -> list[hypernym.HypernymConfig]:
    return [hypernym.HypernymConfig(method=m, dim=4, max_epochs=3, batch_size=3, validFreq=4) for m in ("order", "cosine")]


def test_an_older_hypernym_run_folder_loads_and_resumes(tmp_path, monkeypatch) -> None:
    write_wordnet(tmp_path / "wn", TINY)
    data = build_dataset(read_wordnet(tmp_path / "wn"), seed=0, dev_size=3, test_size=3)
    whole = hypernym.run_experiment(data, _hypernym_configs(), run_dir=tmp_path / "whole", progress=False)
    config = runs.load_json(tmp_path / "whole" / runs.CONFIG)
    assert config["model"]["methods"] == {"order": "order", "symmetric": "cosine"}
    assert config["train"]["symmetric"]["method"] == "cosine"

    _interrupt_at(monkeypatch, hypernym, "apply_rows", 12)  # in the order model's second epoch
    with pytest.raises(Interrupt):
        hypernym.run_experiment(data, _hypernym_configs(), run_dir=tmp_path / "part", progress=False)
    monkeypatch.undo()
    today = _with_old_keys(tmp_path / "part")
    assert runs.load_config(tmp_path / "part" / runs.CONFIG) == today
    assert RunFolders(tmp_path).config("part") == today  # the server shows today's names
    part = hypernym.run_experiment(data, _hypernym_configs(), run_dir=tmp_path / "part", progress=False, resume=True)
    assert _without_seconds(part) == _without_seconds(whole)
    for name in (runs.BEST, "last.order.safetensors", "last.symmetric.safetensors"):
        _same_tensors(tmp_path / "whole" / name, tmp_path / "part" / name)
    saved, expected = hypernym.load_embeddings(tmp_path / "part"), hypernym.load_embeddings(tmp_path / "whole")
    assert saved.thresholds == expected.thresholds
    np.testing.assert_array_equal(saved.errors([("dog.n.01", "animal.n.01")], "symmetric"),
                                  expected.errors([("dog.n.01", "animal.n.01")], "symmetric"))
    # Other settings are still refused when the old keys are read.
    other = [hypernym.HypernymConfig(method="order", dim=4, max_epochs=3, batch_size=3, validFreq=4)]
    with pytest.raises(ValueError, match="other 'model' settings"):
        hypernym.run_experiment(data, other, run_dir=tmp_path / "part", progress=False, resume=True)




def test_an_older_entailment_run_folder_loads_and_resumes(tmp_path, monkeypatch) -> None:
    data = read_snli(write_tiny_snli(tmp_path))
    whole = entailment.run_experiment(data, TINY_ENTAILMENT, tmp_path / "whole", "snli", progress=False)
    assert runs.load_json(tmp_path / "whole" / runs.CONFIG)["model"]["methods"] == {"order": "order",
                                                                                    "symmetric": "cosine"}
    _interrupt_at(monkeypatch, entailment, "clip_gradients", 7)  # in the order model's second epoch
    with pytest.raises(Interrupt):
        entailment.run_experiment(data, TINY_ENTAILMENT, tmp_path / "part", "snli", progress=False)
    monkeypatch.undo()
    today = _with_old_keys(tmp_path / "part")
    assert RunFolders(tmp_path).config("part") == today
    part = entailment.run_experiment(data, TINY_ENTAILMENT, tmp_path / "part", "snli", progress=False, resume=True)
    assert _without_seconds(part) == _without_seconds(whole)
    for name in (runs.BEST, "last.order.safetensors", "last.symmetric.safetensors"):
        _same_tensors(tmp_path / "whole" / name, tmp_path / "part" / name)
    premises, hypotheses = ["A big dog runs ."], ["A dog sleeps ."]
    for variant, method in (("order", "order"), ("symmetric", "cosine")):
        old, new = load_entailment(tmp_path / "part", variant), load_entailment(tmp_path / "whole", variant)
        assert old.net.config.method == method and old.threshold == new.threshold
        np.testing.assert_array_equal(entailment.sentence_errors(old.net, old.vocab, premises, hypotheses),
                                      entailment.sentence_errors(new.net, new.vocab, premises, hypotheses))


def test_the_old_keyword_gives_the_same_result_with_a_notice() -> None:
    gen = torch.Generator().manual_seed(0)
    s, im = torch.rand(5, 3, generator=gen), torch.rand(5, 3, generator=gen)
    for method in ("order", "cosine"):
        with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
            old = contrastive_loss(s, im, measure=method, margin=0.2)
        assert torch.equal(old, contrastive_loss(s, im, method=method, margin=0.2))
        with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
            old = entailment_pair_errors(s, im, measure=method)
        assert torch.equal(old, entailment_pair_errors(s, im, method))
        with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
            old = hypernym.pair_errors(s, im, measure=method)
        assert torch.equal(old, hypernym.pair_errors(s, im, method))
        pairs = np.array([[0, 1], [2, 3], [4, 0]])
        with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
            old_np = hypernym.embedding_errors(s, pairs, measure=method)
        np.testing.assert_array_equal(old_np, hypernym.embedding_errors(s, pairs, method))


def test_the_configs_read_the_old_keyword_and_attribute() -> None:
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        config = hypernym.HypernymConfig(measure="cosine", dim=4)
    assert config == hypernym.HypernymConfig(method="cosine", dim=4) and config.model == "symmetric"
    with pytest.warns(DeprecationWarning, match="the attribute 'measure' is now called 'method'"):
        assert config.measure == "cosine"
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        model = EntailmentModelConfig(n_words=10, dim=3, measure="cosine")
    assert model == EntailmentModelConfig(n_words=10, dim=3, method="cosine")
    with pytest.warns(DeprecationWarning, match=OLD_KEYWORD):
        assert EntailmentModelConfig.from_dict({"n_words": 10, "dim": 3, "measure": "cosine"}) == model
    with pytest.raises(TypeError, match="got both 'method' and its old name 'measure'"):
        hypernym.HypernymConfig(method="order", measure="cosine")
    with pytest.raises(ValueError, match="unknown model option"):
        EntailmentModelConfig.from_dict({"n_words": 10, "metric": "cosine"})
