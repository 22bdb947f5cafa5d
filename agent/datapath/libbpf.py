"""libbpf.so.1, a BCC dependency, for what BCC 0.26 does not wrap (test runs, BPF links)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache
from pathlib import Path


@cache
def libbpf() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)


def check(ret: int, what: str) -> int:
    """A libbpf call's result, or OSError with its errno (libbpf returns -errno, and sets errno)."""
    if ret < 0:
        code = ctypes.get_errno() or -ret
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret


def obj_info(fd: int, info: ctypes.Structure) -> ctypes.Structure:
    """Fill `info` (the head of a kernel struct bpf_*_info) for a map, program or link fd."""
    size = ctypes.c_uint32(ctypes.sizeof(info))
    check(libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), "bpf_obj_get_info_by_fd")
    return info


def open_pinned(path: Path) -> int:
    """An fd for the object pinned at `path` (the caller closes it)."""
    return check(libbpf().bpf_obj_get(str(path).encode()), f"bpf_obj_get {path}")
