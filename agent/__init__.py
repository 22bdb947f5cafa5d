"""Weft's node agent: sources -> desired-state model -> diff -> BPF map writers."""

__version__ = "0.1.0"
