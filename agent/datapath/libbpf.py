"""libbpf.so.1, a BCC dependency, for what BCC 0.26 does not wrap (test runs, BPF links)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache


@cache
def libbpf() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)


def check(ret: int, what: str) -> int:
    """A libbpf call's result, or OSError with its errno (libbpf returns -errno, and sets errno)."""
    if ret < 0:
        code = ctypes.get_errno() or -ret
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return ret
