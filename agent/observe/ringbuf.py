"""Reading a BPF ring buffer straight from its memory mapping, in batches.

libbpf (through BCC) calls back into Python once per record, and that call
costs more than the rest of the agent's work on an event. The ring is two
mappings (linux/bpf.h, libbpf's ringbuf.c): a writable page holding the
consumer position, and read-only the producer position followed by the data,
mapped twice in a row so a record that wraps around reads contiguously. Each
record is an 8-byte header (length, with a busy and a discard bit) and its
data, rounded up to 8 bytes. x86-64 orders these loads as the kernel's
acquire/release pairs require.
"""
from __future__ import annotations

import mmap
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingBuffer:
    def __init__(self, map_fd: int, size: int):
        if size & (size - 1):
            raise ValueError(f"a ring buffer's size is a power of two, not {size}")
        self.mask = size - 1
        page = mmap.PAGESIZE
        self.consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data_offset = page

    def drain(self) -> list[bytes]:
        """Every complete record queued now, oldest first; they are consumed."""
        out = []
        view, data = self.producer, self.data_offset
        consumer = _U64.unpack_from(self.consumer, 0)[0]
        producer = _U64.unpack_from(view, 0)[0]
        while consumer < producer:
            at = data + (consumer & self.mask)
            length = _U32.unpack_from(view, at)[0]
            if length & BUSY_BIT:
                break  # being written: the next drain takes it
            size = length & ~(BUSY_BIT | DISCARD_BIT)
            if not length & DISCARD_BIT:
                out.append(view[at + HEADER:at + HEADER + size])
            consumer += (size + HEADER + 7) & ~7
        _U64.pack_into(self.consumer, 0, consumer)
        return out

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
