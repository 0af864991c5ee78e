"""Order-embeddings of images and language (Vendrov et al., ICLR 2016) in PyTorch."""

from .evaluation import i2t, ranking_eval_5fold, t2i
from .inference import (
    compute_errors,
    encode_images,
    encode_sentences,
    images_from_files,
    load_model,
)
from .loss import contrastive_loss
from .measures import cosine_errors, order_errors

__version__ = "0.1.0"

__all__ = [
    "compute_errors",
    "contrastive_loss",
    "cosine_errors",
    "encode_images",
    "encode_sentences",
    "i2t",
    "images_from_files",
    "load_model",
    "order_errors",
    "ranking_eval_5fold",
    "t2i",
]
