"""Weft's eBPF C sources, shipped as package data and compiled by BCC at start-up."""
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
