"""Pixels: image files decoded into model inputs (crops, feature rows), and CNN feature extraction."""
