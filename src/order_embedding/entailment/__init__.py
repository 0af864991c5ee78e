"""Textual entailment (the paper's third experiment): SNLI-style readers in :mod:`.snli`, the generated
corpus in :mod:`.corpus`, the model in :mod:`.model`, training and evaluation in :mod:`.experiment`, and
scoring pairs with a trained run in :mod:`.classifier`."""
from .classifier import (
           EntailmentClassifier,
           entailment_errors,
           load_entailment,
           predict_entailment,
)
from .corpus import CorpusConfig, generate_corpus, write_corpus
from .experiment import EntailmentConfig, format_results, run_experiment, write_json
from .snli import EntailmentDataError, Pairs, read_pairs, read_snli, tokenize

__all__ = ["CorpusConfig", "EntailmentClassifier", "EntailmentConfig", "EntailmentDataError", "Pairs",
           "entailment_errors", "format_results", "generate_corpus", "load_entailment", "predict_entailment",
           "read_pairs", "read_snli", "run_experiment", "tokenize", "write_corpus", "write_json"]
