"""Where the datapath pins its maps, versioned by the ABI number in bpf/lib/abi.h."""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from bpf import SOURCE_DIR

PIN_ROOT = Path("/sys/fs/bpf/weft")


@cache
def abi_version() -> int:
    """The ABI version, read from the one header that defines it."""
    text = (SOURCE_DIR / "lib" / "abi.h").read_text()
    match = re.search(r"^#define\s+WEFT_ABI_VERSION\s+(\d+)\s*$", text, re.M)
    if not match:
        raise RuntimeError("bpf/lib/abi.h defines no WEFT_ABI_VERSION")
    return int(match.group(1))


@cache
def layout_versions() -> dict[str, int]:
    """Pinned map name -> the ABI version at which its layout last changed."""
    text = (SOURCE_DIR / "lib" / "abi.h").read_text()
    return {name: int(v) for name, v in re.findall(r"^#define\s+WEFT_LAYOUT_(\w+)\s+(\d+)\s*$", text, re.M)}


def older_pin_dirs(node: str, root: Path = PIN_ROOT) -> list[tuple[int, Path]]:
    """(version, directory) of this node's pins from older ABI versions, newest first."""
    base = node_pin_root(node, root)
    found = []
    for path in base.iterdir() if base.exists() else []:
        match = re.fullmatch(r"v(\d+)", path.name)
        if match and int(match.group(1)) < abi_version():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def node_pin_root(node: str, root: Path = PIN_ROOT) -> Path:
    """Everything a node's agent pins, across ABI versions."""
    if not node or "/" in node or node in (".", ".."):
        raise ValueError(f"invalid node name for a pin directory: {node!r}")
    return root / node


def pin_dir(node: str, root: Path = PIN_ROOT) -> Path:
    return node_pin_root(node, root) / f"v{abi_version()}"


def link_dir(node: str, root: Path = PIN_ROOT) -> Path:
    """A node's pinned BPF links (cgroup attachments). Not versioned: an agent of
    a new ABI version finds them and swaps its programs in."""
    return node_pin_root(node, root) / "links"
