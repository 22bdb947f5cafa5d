"""Socket programs attached to a cgroup through pinned BPF links.

A link pinned in bpffs outlives the agent, so pods' connect() calls keep their
Services through a restart, and the next agent swaps its program in with
bpf_link_update: atomically, as replace-filter does for TC, with no moment
without a program. A link stacks with other programs on the cgroup (as
BPF_F_ALLOW_MULTI does) instead of replacing them, and applies to every
process in the cgroup's subtree: the root cgroup on a real node, a cgroup
per lab node when several share one kernel.
"""
from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path

from .libbpf import check, libbpf, obj_info, open_pinned

# enum bpf_attach_type (linux/bpf.h)
CGROUP_INET4_CONNECT = 10
CGROUP_INET4_GETPEERNAME = 29


class _CgroupLinkInfo(ctypes.Structure):
    # struct bpf_link_info up to its cgroup member (linux/bpf.h); the union is 8-aligned
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("cgroup_id", ctypes.c_uint64), ("attach_type", ctypes.c_uint32),
                ("pad2", ctypes.c_uint32)]


@cache
def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or .../unified on a hybrid host
    (read once: the bench asks for it before every command it runs)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def attach(cgroup: Path, pin: Path, prog_fd: int, attach_type: int) -> str:
    """Attach `prog_fd` to `cgroup` through the link pinned at `pin`: "updated" when
    that link was there (same cgroup and hook), else "attached"."""
    lib = libbpf()
    cgroup_id = os.stat(cgroup).st_ino  # a cgroup v2 directory's inode is its id
    if pin.exists():
        fd = open_pinned(pin)
        try:
            info = obj_info(fd, _CgroupLinkInfo())
            if info.cgroup_id == cgroup_id and info.attach_type == attach_type:
                check(lib.bpf_link_update(fd, prog_fd, None), f"bpf_link_update {pin}")
                return "updated"
        finally:
            os.close(fd)
        pin.unlink()  # another cgroup (or one removed since): the last reference goes, it detaches
    pin.parent.mkdir(parents=True, exist_ok=True)
    cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = check(lib.bpf_link_create(prog_fd, cgroup_fd, attach_type, None), f"attaching to cgroup {cgroup}")
    finally:
        os.close(cgroup_fd)
    try:
        check(lib.bpf_obj_pin(fd, str(pin).encode()), f"pinning {pin}")
    finally:
        os.close(fd)
    return "attached"


def detach(pin: Path) -> bool:
    """Unpin a link; with no other holder the kernel detaches its program. True if it was there."""
    try:
        pin.unlink()
        return True
    except FileNotFoundError:
        return False


def attached_program_id(pin: Path) -> int | None:
    """The id of the program a pinned link runs, or None when there is no such pin."""
    if not pin.exists():
        return None
    fd = open_pinned(pin)
    try:
        return obj_info(fd, _CgroupLinkInfo()).prog_id
    finally:
        os.close(fd)
