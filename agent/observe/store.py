"""The agent's memory of recent flows: a bounded ring plus live followers.

Every stored response gets a sequence number, so a follower that subscribes
while history is being sent gets each flow exactly once. A follower that falls
behind loses flows from its own queue, never from the ring or other followers,
and is told how many with a LostEvent.

Flow events from the datapath are kept as the bytes the kernel wrote, a
drain's worth in one piece (ringbuf.Records), and each is decoded (enriched
from the model) the first time someone reads it: a client, a follower, an
exporter. Storing a drain thus costs a ring entry per event made in C, not a
protobuf message, which is what lets one core keep up with the kernel.
The price: a flow is enriched with the model of the moment it is first read,
normally within seconds of the packet.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from itertools import repeat
from typing import Callable

from ..api.flow import flow_pb2
from ..api.observer import observer_pb2
from .ringbuf import Records

DEFAULT_CAPACITY = 4095
FOLLOWER_QUEUE = 8192

log = logging.getLogger(__name__)
_UNREAD = object()  # a raw event not decoded yet (None: undecodable)


class Follower:
    def __init__(self, maxsize: int = FOLLOWER_QUEUE):
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.lost = 0

    def offer(self, item) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.lost += 1


class FlowStore:
    def __init__(self, node_name: str, capacity: int = DEFAULT_CAPACITY,
                 decode: Callable[[bytes, int], flow_pb2.Flow] | None = None):
        self.node_name = node_name
        self.decode = decode
        self.decode_errors = 0
        self.capacity = capacity
        self._ring: deque = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._followers: set[Follower] = set()
        self.seq = 0
        self.seen_flows = 0
        self.started = time.monotonic_ns()
        self.sinks: list = []  # each has export(GetFlowsResponse), called outside the lock

    def add_records(self, drained: list[Records]) -> None:
        """Datapath flow events, kept undecoded until they are read. A drain's worth
        at a time, under one lock: per event, this is the agent's hottest path.
        A raw event's ring entry is (seq, (records, index))."""
        if not drained:
            return
        entries = []
        with self._lock:
            for records in drained:
                first = self.seq + 1
                self.seq += records.count
                records.resps = [_UNREAD] * records.count
                added = zip(range(first, self.seq + 1), zip(repeat(records), range(records.count)))
                if self._followers or self.sinks:
                    added = list(added)
                    entries.extend(added)
                self._ring.extend(added)
                self.seen_flows += records.count
            for follower in self._followers:
                for entry in entries:
                    follower.offer(entry)
        if self.sinks:
            for _, item in entries:
                resp = self.resolve(item)
                if resp is not None:
                    for sink in self.sinks:
                        sink.export(resp)

    def resolve(self, item) -> observer_pb2.GetFlowsResponse | None:
        """The response for a stored item, decoding a raw event on first use."""
        if not isinstance(item, tuple):
            return item
        records, i = item
        resp = records.resps[i]
        if resp is _UNREAD:
            resp = None
            try:
                flow = self.decode(records.data, records.offset(i))
                resp = observer_pb2.GetFlowsResponse(flow=flow, node_name=self.node_name)
                resp.time.CopyFrom(flow.time)
            except Exception:  # a bad record must not break a reader
                self.decode_errors += 1
                log.exception("cannot decode a flow event")
            records.resps[i] = resp
        return resp

    def add_flow(self, flow: flow_pb2.Flow) -> None:
        resp = observer_pb2.GetFlowsResponse(flow=flow, node_name=self.node_name)
        resp.time.CopyFrom(flow.time)
        self._add(resp, counts_as_flow=True)

    def add_lost(self, source: int, count: int) -> None:
        resp = observer_pb2.GetFlowsResponse(
            lost_events=flow_pb2.LostEvent(source=source, num_events_lost=count),
            node_name=self.node_name,
        )
        resp.time.GetCurrentTime()
        self._add(resp, counts_as_flow=False)

    def _add(self, resp, counts_as_flow: bool) -> None:
        with self._lock:
            self.seq += 1
            item = (self.seq, resp)
            self._ring.append(item)
            if counts_as_flow:
                self.seen_flows += 1
            for follower in self._followers:
                follower.offer(item)
        for sink in self.sinks:
            sink.export(resp)

    def snapshot(self) -> list[tuple[int, observer_pb2.GetFlowsResponse]]:
        """Everything the ring holds, decoded, oldest first."""
        with self._lock:
            items = list(self._ring)
        out = []
        for seq, item in items:
            resp = self.resolve(item)
            if resp is not None:
                out.append((seq, resp))
        return out

    def __len__(self) -> int:
        return len(self._ring)

    def subscribe(self) -> Follower:
        follower = Follower()
        with self._lock:
            self._followers.add(follower)
        return follower

    def unsubscribe(self, follower: Follower) -> None:
        with self._lock:
            self._followers.discard(follower)
