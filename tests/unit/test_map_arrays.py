"""Batch arrays packed by struct hold the same bytes ctypes would build."""
from __future__ import annotations

import ctypes

from agent.datapath.maps import ctype_array


class Padded(ctypes.Structure):  # as BCC derives struct lb4_addr_key-like types: holes and a tail
    _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_uint32), ("c", ctypes.c_uint16),
                ("d", ctypes.c_uint64), ("pad", ctypes.c_uint8 * 3)]


class WithArray(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("tags", ctypes.c_uint8 * 4), ("b", ctypes.c_uint32)]


def same(kind, items) -> bool:
    return bytes(ctype_array(kind, items)) == bytes((kind * len(items))(*items))


def test_prefixes_of_fields_with_holes_and_padding():
    assert same(Padded, [(1, 0xDEADBEEF, 7, 2**64 - 1), (255, 0, 65535, 0)])
    assert same(Padded, [(3, 4), (5, 6)])  # the fields not given stay zero


def test_scalars_and_what_struct_cannot_lay_out_fall_back_to_ctypes():
    assert same(ctypes.c_uint32, [1, 2, 2**32 - 1])
    assert same(WithArray, [(1, (1, 2, 3, 4), 9)])  # an array field: built by ctypes
    assert same(ctypes.c_uint32, [-1, 5]), "out of range: stored as ctypes stores it"
    assert bytes(ctype_array(Padded, [(1, 2, 3, 4)]))[:1] == b"\x01"
