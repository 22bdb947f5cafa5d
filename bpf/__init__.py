"""Weft's eBPF C sources, shipped as package data and compiled by BCC at start-up.

WEFT_BPF_DIR compiles another tree instead (a datapath under development, or
the next ABI version in an upgrade test)."""
import os
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("WEFT_BPF_DIR") or Path(__file__).resolve().parent)
