"""Drains the datapath's flow ring buffer on a thread of its own.

Each pass drains everything queued, so nothing else runs on this thread, and
each event costs only a copy of its bytes into
the store (decoding waits until someone reads it) and a count by verdict.
Reserve failures in the kernel are counted by the datapath (weft_flow_lost);
the reader turns increases into LostEvents.
"""
from __future__ import annotations

import logging
import threading
import time

from bcc.table import _get_event_class

from ..api.flow import flow_pb2
from .decode import FlowDecoder
from .ringbuf import RingBuffer
from .store import FlowStore

log = logging.getLogger(__name__)


class FlowReader(threading.Thread):
    # The datapath submits events without waking the reader (BPF_RB_NO_WAKEUP):
    # the reader drains what has accumulated every DRAIN_S, so a busy node costs
    # one pass per interval rather than a wakeup per few events. The ring holds
    # several intervals' worth of events at 200,000 a second.
    DRAIN_S = 0.02
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
        self.by_verdict = [0] * 256  # events drained, by their verdict byte
        store.decode = self.decode_raw
        self._stopping = threading.Event()
        self.ringbuf = RingBuffer(self.ring.map_fd, self.ring.max_entries)

    def kernel_lost(self) -> int:
        return sum(self.lost_table[self.lost_table.Key(0)])

    def decode_raw(self, raw: bytes) -> flow_pb2.Flow:
        return self.decoder.decode(self.event_type.from_buffer_copy(raw))

    def drain(self) -> int:
        """Move every queued event into the store; return how many."""
        records = self.ringbuf.drain()
        offset, counts = self.verdict_offset, self.by_verdict
        for raw in records:
            counts[raw[offset]] += 1
        self.store.add_raw(records)
        return len(records)

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
        while not self._stopping.wait(self.DRAIN_S):
            self.drain()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.LOST_CHECK_S
                self.check_lost()

    def stop(self) -> None:
        self._stopping.set()
