"""A flood of flow events overruns the kernel's ring buffer: the losses are
counted by the datapath and reach clients as a LostEvent, never silently."""
from __future__ import annotations

import uuid

import pytest

from agent.api.flow import flow_pb2
from agent.datapath.loader import DatapathConfig, PodPrograms, unpin_node
from agent.datapath.node_config import NodeConfig
from agent.datapath.testrun import test_run as run
from agent.model.cluster import Cluster
from agent.observe.decode import FlowDecoder
from agent.observe.reader import FlowReader
from agent.observe.store import FlowStore
from tests import packets as pk

from .conftest import TEST_PIN_ROOT

pytestmark = pytest.mark.kernel


def test_ring_buffer_overrun_is_reported_as_lost_events():
    config = DatapathConfig(node=f"loss-{uuid.uuid4().hex[:6]}", pin_root=TEST_PIN_ROOT, flow_ring_pages=1)
    programs = PodPrograms(config)
    try:
        NodeConfig(programs, "none")  # an event for every packet
        store = FlowStore("n1", capacity=100000)
        reader = FlowReader(programs.bpf, FlowDecoder("n1", Cluster("n1"), lambda i: ""), store)
        burst = 2000
        run(programs.from_pod.fd, pk.udp_packet("10.9.0.1", "10.9.0.2", 1000, 53), repeat=burst)
        kernel_lost = reader.kernel_lost()
        assert kernel_lost > 0, "a one-page ring cannot hold the burst"
        reader.drain()  # what the reader thread does, once
        assert reader.check_lost() == kernel_lost
        assert reader.check_lost() == 0, "each loss is reported once"
        lost = [r.lost_events for _, r in store.snapshot() if r.HasField("lost_events")]
        flows = [r for _, r in store.snapshot() if r.HasField("flow")]
        assert sum(e.num_events_lost for e in lost) == kernel_lost
        assert all(e.source == flow_pb2.PERF_EVENT_RING_BUFFER for e in lost)
        assert len(flows) + kernel_lost == burst, "every event either arrived or was counted"
    finally:
        programs.close()
        unpin_node(config.node, TEST_PIN_ROOT)


def test_records_that_wrap_around_the_ring_arrive_whole():
    config = DatapathConfig(node=f"wrap-{uuid.uuid4().hex[:6]}", pin_root=TEST_PIN_ROOT, flow_ring_pages=1)
    programs = PodPrograms(config)
    try:
        NodeConfig(programs, "none")
        store = FlowStore("n1", capacity=100000)
        reader = FlowReader(programs.bpf, FlowDecoder("n1", Cluster("n1"), lambda i: ""), store)
        sent = 0
        for round_ in range(40):  # 40 rounds of 23 events through a 4 KiB ring: it wraps many times
            run(programs.from_pod.fd, pk.udp_packet("10.9.1.1", "10.9.1.2", 2000 + round_, 53), repeat=23)
            sent += 23
            assert reader.drain() == 23
        assert reader.kernel_lost() == 0
        flows = [r.flow for _, r in store.snapshot() if r.HasField("flow")]
        assert len(flows) == sent and {f.l4.UDP.source_port for f in flows} == set(range(2000, 2040))
        assert all(f.IP.source == "10.9.1.1" and f.l4.UDP.destination_port == 53 for f in flows)
    finally:
        programs.close()
        unpin_node(config.node, TEST_PIN_ROOT)
