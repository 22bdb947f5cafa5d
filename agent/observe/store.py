"""The agent's memory of recent flows: a bounded ring plus live followers.

Every stored response gets a sequence number, so a follower that subscribes
while history is being sent gets each flow exactly once. A follower that falls
behind loses flows from its own queue, never from the ring or other followers,
and is told how many with a LostEvent.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque

from ..api.flow import flow_pb2
from ..api.observer import observer_pb2

DEFAULT_CAPACITY = 4095
FOLLOWER_QUEUE = 8192


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
    def __init__(self, node_name: str, capacity: int = DEFAULT_CAPACITY):
        self.node_name = node_name
        self.capacity = capacity
        self._ring: deque = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._followers: set[Follower] = set()
        self.seq = 0
        self.seen_flows = 0
        self.started = time.monotonic_ns()
        self.sinks: list = []  # each has export(GetFlowsResponse), called outside the lock

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
        with self._lock:
            return list(self._ring)

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
