"""bpf/lib/abi.h: every pinned map declares the ABI version its layout last
changed at, so an upgrade knows which maps it may copy and which to rebuild."""
from __future__ import annotations

import re

from agent.datapath import abi
from bpf import SOURCE_DIR


def pinned_maps() -> set[str]:
    text = "".join(p.read_text() for p in SOURCE_DIR.rglob("*.[ch]"))
    return set(re.findall(r"BPF_TABLE_PINNED\(\s*\"\w+\"\s*,[^,]+,[^,]+,\s*(\w+)\s*,", text))


def test_every_pinned_map_has_a_layout_version_no_newer_than_the_abi():
    layouts = abi.layout_versions()
    maps = pinned_maps()
    assert len(maps) >= 10, "found the pinned maps"
    assert set(layouts) == maps, "a WEFT_LAYOUT_<map> line per pinned map, and no other"
    assert all(1 <= v <= abi.abi_version() for v in layouts.values())


def test_older_pin_dirs_lists_only_older_versions_newest_first(tmp_path):
    node = tmp_path / "n1"
    for name in ("v1", f"v{abi.abi_version()}", "v3", "junk"):
        (node / name).mkdir(parents=True)
    older = abi.older_pin_dirs("n1", tmp_path)
    assert [v for v, _ in older] == sorted({1, 3} - {abi.abi_version()}, reverse=True)
