"""Writing BPF map entries through BCC with errors an operator can act on."""
from __future__ import annotations

import errno
import heapq
import os
import socket
import struct

from .errors import DatapathError, MapFullError

_FULL = (errno.E2BIG, errno.ENOSPC, errno.ENOMEM)


def _write_error(exc: Exception, map_name: str, size: int) -> DatapathError:
    """The error for a failed write. BCC raises a bare Exception carrying the errno
    text (`[Errno 7] ...` for single writes, strerror alone for batches)."""
    text = str(exc)
    full = any(f"Errno {code}]" in text or os.strerror(code) in text for code in _FULL)
    if full:
        return MapFullError(map_name, size)
    return DatapathError(f"writing BPF map {map_name}: {text}")


def write_entry(table, key, leaf, map_name: str, size: int) -> None:
    """table[key] = leaf; a full map raises MapFullError naming it."""
    try:
        table[key] = leaf
    except Exception as exc:
        raise _write_error(exc, map_name, size) from None


class BatchWriter:
    """Writes accumulated entries of one map: with BPF_MAP_UPDATE_BATCH when there
    are many (a full sync of thousands of Services), one by one otherwise.

    Keys and values are given as tuples of field values (or plain ints for scalar
    types), in the field order of BCC's Key and Leaf types: the batch arrays are
    built from them directly, without a ctypes object per entry."""

    BATCH_FROM = 32

    def __init__(self, table, map_name: str, size: int):
        self.table, self.map_name, self.size = table, map_name, size
        self.keys: list = []
        self.values: list = []

    def put(self, key, value) -> None:
        self.keys.append(key)
        self.values.append(value)

    def flush(self) -> None:
        keys, values, self.keys, self.values = self.keys, self.values, [], []
        if len(keys) < self.BATCH_FROM:
            for k, v in zip(keys, values):
                write_entry(self.table, _ctype(self.table.Key, k), _ctype(self.table.Leaf, v),
                            self.map_name, self.size)
            return
        key_array = (self.table.Key * len(keys))(*keys)
        value_array = (self.table.Leaf * len(values))(*values)
        try:
            self.table.items_update_batch(key_array, value_array)
        except Exception as exc:
            raise _write_error(exc, self.map_name, self.size) from None


def _ctype(kind, value):
    return kind(*value) if isinstance(value, tuple) else kind(value)


def delete_entry(table, key) -> None:
    try:
        del table[key]
    except KeyError:
        pass


_U32 = struct.Struct("=I")


def ip_to_be32(ip: str) -> int:
    """An IPv4 address (dotted quad, validated by the model) as the u32 whose
    memory holds it in network byte order."""
    return _U32.unpack(socket.inet_aton(ip))[0]


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(_U32.pack(value))


class IdAllocator:
    """Lowest free positive id, in O(log n): ids freed are reused first."""

    def __init__(self, used=()):
        self.used = set(used)
        self.next = max(self.used, default=0) + 1
        self.free = [i for i in range(1, self.next) if i not in self.used]
        heapq.heapify(self.free)

    def allocate(self) -> int:
        while self.free:
            candidate = heapq.heappop(self.free)
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        candidate = self.next
        self.next += 1
        self.used.add(candidate)
        return candidate

    def release(self, ident: int) -> None:
        if ident in self.used:
            self.used.discard(ident)
            heapq.heappush(self.free, ident)
