"""Entering a network namespace from the current thread only.

setns(CLONE_NEWNET) changes the calling thread's namespace, and a socket keeps
the namespace it was created in. So a probe can create its socket inside a pod
and go back, without a process per probe. Python 3.11 has no os.setns.
"""
from __future__ import annotations

import ctypes
import os
import threading
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(name: str):
    """Run the block with this thread in network namespace `name`."""
    target = os.open(NETNS_DIR / name, os.O_RDONLY)
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()
