"""Weft's benchmarks: run on demand (python -m bench), never as timed tests."""
