"""Carrying pinned state across an ABI upgrade without a traffic gap.

A new ABI version pins a fresh set of maps (`abi.pin_dir`). Before any writer
adopts them, `copy_from_previous` copies the entries of every map whose layout
has not changed since the previous version's pins (`WEFT_LAYOUT_*` in
bpf/lib/abi.h): conntrack with its backend ids, the backends those ids name,
Service and policy entries, counters. Maps whose layout changed start empty
and the agent rebuilds them from its model before it attaches the new
programs, so a packet meets either the old programs with the old maps or the
new programs with whole new maps.

Between the copy and the attach the old programs still run and may open
connections; `catch_up` copies the conntrack-like maps again right before and
right after the attach, without overwriting what the new programs wrote, and
then `finish` removes the old pins. A connection opened by an old program in
the few milliseconds the attach takes, whose next packet meets a new program
before the second catch-up, can still miss its conntrack entry.
"""
from __future__ import annotations

import ctypes
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import abi
from .libbpf import open_pinned
from .maps import MapInfo, map_info

log = logging.getLogger(__name__)

BPF_ANY, BPF_NOEXIST = 0, 1
PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
# State the datapath itself creates per connection: copied again after the attach.
PER_CONNECTION = ("weft_ct", "weft_lb4_affinity", "weft_snat4")


def _value_size(info: MapInfo) -> int:
    if info.type in PERCPU_TYPES:
        from bcc.utils import get_possible_cpus

        return ((info.value_size + 7) & ~7) * len(get_possible_cpus())
    return info.value_size


def copy_map(src_fd: int, dst_fd: int, flags: int = BPF_ANY) -> int:
    """Copy every entry of one map into another of the same layout; return how many."""
    from bcc.libbcc import lib

    src, dst = map_info(src_fd), map_info(dst_fd)
    if (src.type, src.key_size, src.value_size) != (dst.type, dst.key_size, dst.value_size):
        raise ValueError(f"layouts differ: type/key/value {src.type}/{src.key_size}/{src.value_size} "
                         f"vs {dst.type}/{dst.key_size}/{dst.value_size}")
    key = ctypes.create_string_buffer(src.key_size)
    next_key = ctypes.create_string_buffer(src.key_size)
    value = ctypes.create_string_buffer(_value_size(src))
    copied = 0
    more = lib.bpf_get_next_key(src_fd, None, next_key) == 0
    for _ in range(src.max_entries):  # bounded, even if entries churn under the walk
        if not more:
            break
        ctypes.memmove(key, next_key, src.key_size)
        more = lib.bpf_get_next_key(src_fd, key, next_key) == 0
        if lib.bpf_lookup_elem(src_fd, key, value) != 0:
            continue  # expired or deleted meanwhile
        if lib.bpf_update_elem(dst_fd, key, value, flags) == 0:
            copied += 1
    return copied


@dataclass
class Migration:
    """What an upgrade carried over from the previous ABI version's pins."""

    node: str = ""
    pin_root: Path = abi.PIN_ROOT
    from_version: int = 0
    from_dir: Path | None = None
    copied: dict[str, int] = field(default_factory=dict)   # map -> entries
    rebuilt: list[str] = field(default_factory=list)        # maps whose layout changed

    def __bool__(self) -> bool:
        return self.from_dir is not None


def _copy(old_dir: Path, names, table_fd, flags: int) -> dict[str, int]:
    import os

    out = {}
    for name in names:
        fd = open_pinned(old_dir / name)
        try:
            out[name] = copy_map(fd, table_fd(name), flags)
        finally:
            os.close(fd)
    return out


def copy_from_previous(node: str, pin_root: Path, table_fd) -> Migration:
    """Copy the previous ABI version's maps into the new, still unused ones.

    `table_fd(name)` gives the new map's fd. Does nothing without older pins."""
    older = abi.older_pin_dirs(node, pin_root)
    if not older:
        return Migration()
    version, old_dir = older[0]
    layouts = abi.layout_versions()
    migration = Migration(node, pin_root, version, old_dir)
    copyable = []
    for path in sorted(old_dir.iterdir()):
        since = layouts.get(path.name)
        if since is None:
            continue  # a map the new datapath no longer has
        if since > version:
            migration.rebuilt.append(path.name)
        else:
            copyable.append(path.name)
    for name in copyable:
        try:
            migration.copied.update(_copy(old_dir, [name], table_fd, BPF_ANY))
        except (OSError, ValueError) as exc:  # declared unchanged but is not: rebuild it
            log.warning("upgrade: %s not copied from v%d (%s); rebuilt from the model", name, version, exc)
            migration.rebuilt.append(name)
    log.info("upgrade from ABI v%d: copied %s; rebuilding %s", version,
             ", ".join(f"{n} ({c})" for n, c in sorted(migration.copied.items())) or "nothing",
             ", ".join(sorted(migration.rebuilt)) or "nothing")
    return migration


def catch_up(migration: Migration, table_fd) -> dict[str, int]:
    """Copy the connections the old programs opened since the first copy, never
    overwriting an entry the new programs wrote. Called right before the new
    programs attach (the old ones ran all through the first sync) and right
    after (they ran while the attach went round the interfaces)."""
    if not migration:
        return {}
    names = [n for n in PER_CONNECTION if n in migration.copied]
    return _copy(migration.from_dir, names, table_fd, BPF_NOEXIST)


def finish(migration: Migration) -> None:
    """Remove the old pins, which frees the old maps once no program holds them."""
    if not migration:
        return
    for older_version, path in abi.older_pin_dirs(migration.node, migration.pin_root):
        shutil.rmtree(path)
        log.info("upgrade: removed the ABI v%d pins in %s", older_version, path)
