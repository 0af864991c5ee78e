"""Order-embeddings of images and language (Vendrov et al., ICLR 2016) in PyTorch."""

__version__ = "0.1.0"
