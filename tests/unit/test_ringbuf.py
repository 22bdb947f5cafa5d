"""The ring-buffer walk and the store's raw batches, on a ring laid out in
memory as the kernel lays it out (producer page, data mapped twice)."""
from __future__ import annotations

import struct

from agent.api.flow import flow_pb2 as pb
from agent.observe.ringbuf import BUSY_BIT, DISCARD_BIT, HEADER, RingBuffer
from agent.observe.store import FlowStore

PAGE = 4096
SIZE = 4096


class FakeRing(RingBuffer):
    """A RingBuffer over plain memory: the test plays the kernel's producer."""

    def __init__(self):
        self.size, self.mask, self.data_offset = SIZE, SIZE - 1, PAGE
        self.consumer = bytearray(8)
        self.producer = bytearray(PAGE + 2 * SIZE)
        self.head = 0

    def _write(self, pos: int, data: bytes) -> None:
        for i, byte in enumerate(data):  # the data area is mapped twice in a row
            at = (pos + i) & self.mask
            self.producer[PAGE + at] = self.producer[PAGE + SIZE + at] = byte

    def reserve(self, payload: bytes, flags: int = 0) -> int:
        at = self.head
        self._write(at, struct.pack("<II", len(payload) | flags, at) + payload)
        self.head += (len(payload) + HEADER + 7) & ~7
        struct.pack_into("<Q", self.producer, 0, self.head)
        return at

    def commit(self, at: int, length: int) -> None:
        self._write(at, struct.pack("<I", length))

    def consumed(self) -> int:
        return struct.unpack_from("<Q", self.consumer)[0]


def payloads(drained) -> list[bytes]:
    out = []
    for records in drained:
        size = records.stride - HEADER
        out += [records.data[records.offset(i):records.offset(i) + size] for i in range(records.count)]
    return out


def event(i: int, size: int = 24) -> bytes:
    return i.to_bytes(4, "little") * (size // 4)


def test_records_of_one_size_come_out_as_one_run_in_order():
    ring = FakeRing()
    for i in range(50):
        ring.reserve(event(i))
    drained = ring.drain()
    assert [r.count for r in drained] == [50] and drained[0].stride == 32
    assert payloads(drained) == [event(i) for i in range(50)]
    assert ring.consumed() == ring.head and ring.drain() == []


def test_a_record_being_written_stops_the_drain_until_it_is_committed():
    ring = FakeRing()
    for i in range(3):
        ring.reserve(event(i))
    busy = ring.reserve(event(3), BUSY_BIT)
    ring.reserve(event(4))
    assert payloads(ring.drain()) == [event(i) for i in range(3)]
    assert payloads(ring.drain()) == [], "nothing past a busy record"
    ring.commit(busy, 24)
    assert payloads(ring.drain()) == [event(3), event(4)]
    assert ring.consumed() == ring.head


def test_discarded_records_are_skipped_and_consumed():
    ring = FakeRing()
    ring.reserve(event(0))
    ring.reserve(event(1), DISCARD_BIT)
    ring.reserve(event(2))
    assert payloads(ring.drain()) == [event(0), event(2)]
    assert ring.consumed() == ring.head


def test_records_of_other_sizes_make_runs_of_their_own():
    ring = FakeRing()
    sizes = [24] * 5 + [40] + [24] * 7 + [16, 16]
    for i, size in enumerate(sizes):
        ring.reserve(event(i, size))
    drained = ring.drain()
    assert [(r.count, r.stride) for r in drained] == [(5, 32), (1, 48), (7, 32), (2, 24)]
    assert payloads(drained) == [event(i, size) for i, size in enumerate(sizes)]


def test_records_wrapping_past_the_end_of_the_ring_read_whole():
    ring = FakeRing()
    for lap in range(5):  # 100 records of 40 bytes a lap through 4 KiB: wraps mid-record
        for i in range(100):
            ring.reserve(event(lap * 100 + i, 32))
        assert payloads(ring.drain()) == [event(lap * 100 + i, 32) for i in range(100)]


def decode_first_word(data: bytes, offset: int) -> pb.Flow:
    (i,) = struct.unpack_from("<I", data, offset)
    if i == 13:
        raise ValueError("an undecodable event")
    flow = pb.Flow(node_name="n1")
    flow.time.FromNanoseconds(1_700_000_000_000_000_000 + i)
    return flow


def test_the_store_keeps_the_newest_raw_events_and_decodes_each_once():
    ring = FakeRing()
    store = FlowStore("n1", capacity=10, decode=decode_first_word)
    for i in range(8):
        ring.reserve(event(i))
    store.add_records(ring.drain())
    store.add_lost(pb.PERF_EVENT_RING_BUFFER, 3)
    for i in range(8, 16):
        ring.reserve(event(i))
    store.add_records(ring.drain())
    held = store.snapshot()
    assert len(store) == 10 and store.seen_flows == 16
    assert [seq for seq, _ in held] == [8, 9, 10, 11, 12, 13, 14, 16, 17], "event 13 (seq 15) undecodable"
    times = [r.time.nanos for _, r in held if r.HasField("flow")]
    assert times == [7, 8, 9, 10, 11, 12, 14, 15], "the oldest dropped first"
    assert store.decode_errors == 1
    store.snapshot()
    assert store.decode_errors == 1, "each event is decoded once"


def test_followers_and_sinks_get_every_raw_event():
    ring = FakeRing()
    store = FlowStore("n1", capacity=4, decode=decode_first_word)
    follower = store.subscribe()
    exported = []
    store.sinks.append(type("Sink", (), {"export": lambda self, resp: exported.append(resp.time.nanos)})())
    for i in range(6):
        ring.reserve(event(i))
    store.add_records(ring.drain())
    followed = []
    while not follower.queue.empty():
        seq, item = follower.queue.get_nowait()
        followed.append((seq, store.resolve(item).time.nanos))
    assert followed == [(i + 1, i) for i in range(6)]
    assert exported == list(range(6))


def test_the_reader_counts_verdicts_and_skips_records_that_are_not_flow_events():
    from agent.observe.reader import FlowReader
    ring = FakeRing()
    store = FlowStore("n1", capacity=100, decode=decode_first_word)
    reader = object.__new__(FlowReader)  # its ring and layout, without a datapath behind them
    reader.ringbuf, reader.store, reader.stride, reader.verdict_offset = ring, store, 32, 4
    reader.by_verdict = [0] * 256
    verdicts = [pb.FORWARDED] * 5 + [pb.DROPPED] * 2 + [pb.FORWARDED]
    for i, verdict in enumerate(verdicts):
        ring.reserve(struct.pack("<IB", i, verdict).ljust(24, b"\0"))
    ring.reserve(event(99, 40))  # a record of another size
    assert reader.drain() == 8
    assert reader.by_verdict[pb.FORWARDED] == 6 and reader.by_verdict[pb.DROPPED] == 2
    assert store.seen_flows == 8 and store.decode_errors == 1


def test_the_reader_comes_back_sooner_the_faster_the_ring_fills():
    from agent.observe.reader import FlowReader
    reader = object.__new__(FlowReader)
    reader.quarter = 3500  # events: a quarter of the agent's default ring
    interval = FlowReader.DRAIN_S
    assert reader.next_pause(0, interval) == interval
    assert reader.next_pause(2000, interval) == interval, "100,000 events/s: the ring never nears full"
    fast = reader.next_pause(20_000, interval)  # a million a second: a quarter fills in 3.5 ms
    assert abs(fast - 0.0035) < 1e-9
    assert reader.next_pause(10**6, interval) == FlowReader.MIN_DRAIN_S
