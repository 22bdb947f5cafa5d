"""BPF_PROG_TEST_RUN: run a loaded program on a packet without a network.

BCC 0.26 does not wrap it; libbpf.so.1 (a BCC dependency) does, as
bpf_prog_test_run_opts. The output packet and the return code come back, so
tests can assert verdicts and rewrites, and benchmarks get the kernel's own
per-run time.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache

from .libbpf import libbpf


class _TestRunOpts(ctypes.Structure):
    # struct bpf_test_run_opts from libbpf's bpf.h (sz first, as libbpf's OPTS require)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@cache
def _libbpf():
    lib = libbpf()
    lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(_TestRunOpts)]
    lib.bpf_prog_test_run_opts.restype = ctypes.c_int
    return lib


@dataclass
class TestRunResult:
    retval: int
    packet: bytes
    duration_ns: int  # the kernel's average per repetition


def test_run(prog_fd: int, packet: bytes, repeat: int = 1) -> TestRunResult:
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(packet),
        data_size_out=len(data_out),
        repeat=repeat,
    )
    if _libbpf().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)
