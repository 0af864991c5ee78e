"""Hypernym completion on WordNet (the paper's second experiment): the graph in :mod:`.wordnet`, the
training and evaluation in :mod:`.experiment`."""
from .experiment import (
                         HypernymConfig,
                         HypernymEmbeddings,
                         closure_baseline,
                         format_results,
                         load_embeddings,
                         run_experiment,
                         write_json,
)
from .wordnet import (
                         DEFAULT_WORDNET_DIR,
                         HypernymDataset,
                         build_dataset,
                         find_wordnet_dir,
                         read_wordnet,
)

__all__ = ["DEFAULT_WORDNET_DIR", "HypernymConfig", "HypernymDataset", "HypernymEmbeddings", "build_dataset",
           "closure_baseline", "find_wordnet_dir", "format_results", "load_embeddings", "read_wordnet",
           "run_experiment", "write_json"]
