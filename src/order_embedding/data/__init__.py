"""Data: caption-image splits in the three common layouts, their preparation, the generated shapes world,
and streamed reading of large ``.npy`` and text files."""
from .splits import DATA_ENV, FOLD_SIZE, DataError, Split, load_split, resolve_data_dir

__all__ = ["DATA_ENV", "FOLD_SIZE", "DataError", "Split", "load_split", "resolve_data_dir"]
