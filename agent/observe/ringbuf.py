"""Reading a BPF ring buffer straight from its memory mapping, in batches.

libbpf (through BCC) calls back into Python once per record, and that call
costs more than the rest of the agent's work on an event. The ring is two
mappings (linux/bpf.h, libbpf's ringbuf.c): a writable page holding the
consumer position, and read-only the producer position followed by the data,
mapped twice in a row so a record that wraps around reads contiguously. Each
record is an 8-byte header (length, with a busy and a discard bit) and its
data, rounded up to 8 bytes. x86-64 orders these loads as the kernel's
acquire/release pairs require.

The datapath writes records of one size, so a drain is nearly always one run
of equal headers: it is found by comparing every header at once and copied
out in one piece, and no Python code runs per record.
"""
from __future__ import annotations

import mmap
import struct

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HEADER = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class Records:
    """`count` records of `stride` bytes each in `data`, the first at `start`
    (its header before it). `resps` caches what each decodes to, once read."""

    __slots__ = ("data", "start", "stride", "count", "resps")

    def __init__(self, data: bytes, start: int, stride: int, count: int):
        self.data = data
        self.start = start
        self.stride = stride
        self.count = count
        self.resps = None

    def offset(self, i: int) -> int:
        return self.start + i * self.stride


def _run_length(headers: memoryview, header: bytes, limit: int) -> int:
    """How many of the first `limit` headers (4 bytes each) equal `header`."""
    if headers[:limit].tobytes() == header * limit:
        return limit
    low, high = 1, limit  # headers[0] is known to match; headers[:high] does not all
    while high - low > 1:
        mid = (low + high) // 2
        if headers[low:mid].tobytes() == header * (mid - low):
            low = mid
        else:
            high = mid
    return low


class RingBuffer:
    def __init__(self, map_fd: int, size: int):
        if size & (size - 1):
            raise ValueError(f"a ring buffer's size is a power of two, not {size}")
        self.mask = size - 1
        page = mmap.PAGESIZE
        self.consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.producer = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.data_offset = page

    def drain(self) -> list[Records]:
        """Every complete record queued now, oldest first, in runs of one size;
        they are consumed."""
        out = []
        data = self.data_offset
        consumer = _U64.unpack_from(self.consumer, 0)[0]
        producer = _U64.unpack_from(self.producer, 0)[0]
        with memoryview(self.producer) as view:
            while consumer < producer:
                at = data + (consumer & self.mask)
                length = _U32.unpack_from(view, at)[0]
                if length & BUSY_BIT:
                    break  # being written: the next drain takes it
                stride = ((length & ~(BUSY_BIT | DISCARD_BIT)) + HEADER + 7) & ~7
                if length & DISCARD_BIT:
                    consumer += stride
                    continue
                limit = (producer - consumer) // stride
                if limit <= 1:
                    count = 1
                else:
                    with view[at:at + limit * stride].cast("I") as words, words[::stride // 4] as headers:
                        count = _run_length(headers, view[at:at + 4].tobytes(), limit)
                out.append(Records(view[at:at + count * stride].tobytes(), HEADER, stride, count))
                consumer += count * stride
        _U64.pack_into(self.consumer, 0, consumer)
        return out

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
