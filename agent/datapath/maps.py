"""Writing BPF map entries through BCC with errors an operator can act on."""
from __future__ import annotations

import ctypes
import errno
import functools
import heapq
import os
import socket
import struct

from .errors import DatapathError, MapFullError
from .libbpf import obj_info

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
        key_array = ctype_array(self.table.Key, keys)
        value_array = ctype_array(self.table.Leaf, values)
        try:
            self.table.items_update_batch(key_array, value_array)
        except Exception as exc:
            raise _write_error(exc, self.map_name, self.size) from None


_NO_BATCH = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # 524: the kernel's ENOTSUPP


class MapInfo(ctypes.Structure):  # the head of the kernel's struct bpf_map_info
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 64)]


def map_info(fd: int) -> MapInfo:
    return obj_info(fd, MapInfo())


def lookup_all(table, chunk: int = 4096):
    """Every entry of a hash map, read with BPF_MAP_LOOKUP_BATCH: a few system
    calls where iterating takes two per entry and a Python object each (the
    conntrack sweep reads up to the whole map). (keys, values, count) as
    arrays of BCC's Key and Leaf types, or None where the kernel has no batch
    lookup for the map."""
    from bcc.libbcc import lib

    capacity = map_info(table.map_fd).max_entries  # BCC's figure is the compiled one, not the pin's
    keys, values = (table.Key * capacity)(), (table.Leaf * capacity)()
    key_size, value_size = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
    token, count = ctypes.c_uint32(0), ctypes.c_uint32(0)
    total = 0
    while total < capacity:
        count.value = min(chunk, capacity - total)
        ret = lib.bpf_lookup_batch(table.map_fd, ctypes.byref(token) if total else None, ctypes.byref(token),
                                   ctypes.byref(keys, key_size * total), ctypes.byref(values, value_size * total),
                                   ctypes.byref(count))
        err = ctypes.get_errno()
        total += count.value
        if ret == 0:
            continue
        if err == errno.ENOENT:  # every bucket walked
            break
        if total == 0 and err in _NO_BATCH:
            return None
        raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
    return keys, values, total


def delete_all(table, keys) -> int:
    """Delete the given keys (an array of table.Key) with BPF_MAP_DELETE_BATCH;
    return how many were there to delete. A key gone meanwhile is skipped."""
    from bcc.libbcc import lib

    key_size, done, deleted = ctypes.sizeof(table.Key), 0, 0
    count = ctypes.c_uint32(0)
    while done < len(keys):
        count.value = len(keys) - done
        ret = lib.bpf_delete_batch(table.map_fd, ctypes.byref(keys, key_size * done), ctypes.byref(count))
        done += count.value
        deleted += count.value
        if ret != 0:
            done += 1  # the batch stops at a key that is not there: evicted or deleted meanwhile
    return deleted


_CODES = {ctypes.c_uint8: "B", ctypes.c_uint16: "H", ctypes.c_uint32: "I", ctypes.c_uint64: "Q",
          ctypes.c_int8: "b", ctypes.c_int16: "h", ctypes.c_int32: "i", ctypes.c_int64: "q"}


@functools.lru_cache(maxsize=None)
def _layout(kind, given: int | None) -> struct.Struct | None:
    """A struct.Struct laying out the first `given` fields of a ctypes Structure
    (None: a scalar type) at the offsets ctypes gives them, zeros elsewhere;
    None when some field is not a plain integer. Derived from BCC's type, so
    there is no second copy of a C layout to keep in step."""
    if given is None:
        code = _CODES.get(kind)
        return struct.Struct("=" + code) if code else None
    fmt, pos = "=", 0
    for field in kind._fields_[:given]:
        name, ftype = field[0], field[1]
        code = _CODES.get(ftype)
        offset = getattr(kind, name).offset
        if code is None or len(field) > 2 or offset < pos:  # arrays, nested structs, bit fields
            return None
        fmt += "x" * (offset - pos) + code
        pos = offset + ctypes.sizeof(ftype)
    return struct.Struct(fmt + "x" * (ctypes.sizeof(kind) - pos))


def ctype_array(kind, items: list):
    """An array of `kind` from tuples of field values (or ints for a scalar type):
    packed by struct at C speed where ctypes would build an object per entry (a
    third of writing 10,000 Services), else built by ctypes."""
    given = len(items[0]) if isinstance(items[0], tuple) else None
    layout = _layout(kind, given)
    if layout is not None:
        try:
            data = b"".join(layout.pack(*item) for item in items) if given is not None else \
                b"".join(map(layout.pack, items))
            return (kind * len(items)).from_buffer_copy(data)
        except (struct.error, TypeError):  # a value out of its field's range: as ctypes stores it
            pass
    return (kind * len(items))(*items)


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
