"""Web app for watching runs train, comparing their retrieval and querying a model by typing."""
from .app import create_app

__all__ = ["create_app"]
