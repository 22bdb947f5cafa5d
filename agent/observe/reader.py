"""Drains the datapath's flow ring buffer on a thread of its own.

Each pass drains everything queued, so nothing else runs on this thread. A
drain's events are copied out in one piece, counted by verdict and kept in the
store as they are (decoding waits until someone reads them): no Python code
runs per event.
Reserve failures in the kernel are counted by the datapath (weft_flow_lost);
the reader turns increases into LostEvents.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time

from bcc.table import _get_event_class

from ..api.flow import flow_pb2
from .decode import FlowDecoder
from .ringbuf import HEADER, Records, RingBuffer
from .store import FlowStore

log = logging.getLogger(__name__)


class FlowReader(threading.Thread):
    # The datapath submits events without waking the reader (BPF_RB_NO_WAKEUP):
    # the reader drains what has accumulated every DRAIN_S, so a busy node costs
    # one pass per interval rather than a wakeup per few events. The ring holds
    # several intervals' worth of events at 200,000 a second. Faster, the reader
    # comes back in the time the last rate takes to fill a quarter of the ring
    # (never sooner than MIN_DRAIN_S), so a sustained million a second is not lost
    # to the interval; only a burst's first interval can overrun the ring.
    DRAIN_S = 0.02
    MIN_DRAIN_S = 0.001
    LOST_CHECK_S = 1.0

    def __init__(self, bpf, decoder: FlowDecoder, store: FlowStore):
        super().__init__(name="flow-reader", daemon=True)
        self.bpf = bpf
        self.decoder = decoder
        self.store = store
        self.ring = bpf[b"weft_flows"]
        self.lost_table = bpf[b"weft_flow_lost"]
        self.lost_reported = self.kernel_lost()
        # BCC's type for struct flow_event, derived from bpf/lib/flow.h
        self.event_type = _get_event_class(self.ring)
        self.verdict_offset = self.event_type.verdict.offset
        # each record is the event after the ring's header, 8-byte aligned
        self.stride = (ctypes.sizeof(self.event_type) + HEADER + 7) & ~7
        self.by_verdict = [0] * 256  # events drained, by their verdict byte
        store.decode = self.decode_raw
        self._stopping = threading.Event()
        self.ringbuf = RingBuffer(self.ring.map_fd, self.ring.max_entries)
        self.quarter = self.ring.max_entries // self.stride // 4  # events: a quarter of the ring

    def kernel_lost(self) -> int:
        return sum(self.lost_table[self.lost_table.Key(0)])

    def decode_raw(self, data: bytes, offset: int) -> flow_pb2.Flow:
        return self.decoder.decode(self.event_type.from_buffer_copy(data, offset))

    def drain(self) -> int:
        """Move every queued event into the store; return how many."""
        drained = []
        for records in self.ringbuf.drain():
            if records.stride != self.stride:
                # not a flow_event: a datapath built from other headers
                log.error("%d flow records of %d bytes, not %d: skipped",
                          records.count, records.stride, self.stride)
                self.store.decode_errors += records.count
                continue
            self._count_verdicts(records)
            drained.append(records)
        self.store.add_records(drained)
        return sum(r.count for r in drained)

    def _count_verdicts(self, records: Records) -> None:
        verdicts = records.data[records.start + self.verdict_offset::records.stride]
        for verdict in set(verdicts):
            self.by_verdict[verdict] += verdicts.count(verdict)

    def next_pause(self, drained: int, seconds: float) -> float:
        """How long to wait before the next drain, after `drained` events came in `seconds`."""
        if drained * self.DRAIN_S <= self.quarter * seconds:
            return self.DRAIN_S  # the ring fills slower than a quarter per interval
        return max(self.MIN_DRAIN_S, self.quarter * seconds / drained)

    def check_lost(self) -> int:
        """Report reserve failures since the last check as a LostEvent; return how many."""
        lost = self.kernel_lost()
        new = lost - self.lost_reported
        if new > 0:
            self.store.add_lost(flow_pb2.PERF_EVENT_RING_BUFFER, new)
            self.lost_reported = lost
        return max(new, 0)

    def run(self) -> None:
        next_check = time.monotonic() + self.LOST_CHECK_S
        pause, last = self.DRAIN_S, time.monotonic()
        while not self._stopping.wait(pause):
            drained, now = self.drain(), time.monotonic()
            pause = self.next_pause(drained, now - last)
            last = now
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.LOST_CHECK_S
                self.check_lost()

    def stop(self) -> None:
        self._stopping.set()
