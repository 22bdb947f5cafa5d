"""Checks that the machine can run Weft's datapath, before anything is touched.

Each failed check is one sentence that says what is missing and how to fix it.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .errors import MissingCapability

BPFFS = Path("/sys/fs/bpf")

# Capability bit numbers from linux/capability.h.
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_BPF = 39


def effective_caps() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_caps() -> None:
    caps = effective_caps()
    missing = [
        name
        for name, bit in (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))
        if not caps & (1 << bit)
    ]
    if not caps & ((1 << CAP_BPF) | (1 << CAP_SYS_ADMIN)):
        missing.append("CAP_BPF")
    if missing:
        raise MissingCapability(
            f"Weft needs {', '.join(missing)}: run it as root (or grant those capabilities)."
        )


def bpffs_mounted(path: Path = BPFFS) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and fields[4] == str(path) and right.split()[0] == "bpf":
            return True
    return False


def ensure_bpffs(path: Path = BPFFS) -> None:
    """Mount bpffs if it is missing, as Cilium's mount-bpf-fs init step does."""
    if bpffs_mounted(path):
        return
    result = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(path)], capture_output=True, text=True
    )
    if result.returncode != 0 or not bpffs_mounted(path):
        raise MissingCapability(
            f"bpffs is not mounted at {path} and mounting it failed "
            f"({result.stderr.strip() or 'no error text'}): run `mount -t bpf bpf {path}`."
        )


def check_bcc() -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise MissingCapability(
            "BCC's Python module is missing: run scripts/setup (it installs Debian's "
            "python3-bpfcc and a virtualenv made with --system-site-packages)."
        ) from None
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        raise MissingCapability(
            f"BCC finds no kernel headers at {build}: run scripts/setup "
            "(it links the distribution's newest headers there)."
        )


def check_all() -> None:
    check_caps()
    check_bcc()
    ensure_bpffs()


def features() -> list[str]:
    """What this kernel and machine offer the datapath, for `meshctl status`."""
    import os

    found = [f"kernel {os.uname().release}"]
    if Path("/sys/kernel/btf/vmlinux").exists():
        found.append("BTF")
    if bpffs_mounted():
        found.append(f"bpffs at {BPFFS}")
    try:
        import bcc

        found.append(f"BCC {getattr(bcc, '__version__', 'unknown version')}")
    except ImportError:
        pass
    return found
