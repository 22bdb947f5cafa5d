from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

TEST_PIN_ROOT = Path("/sys/fs/bpf/weft-test")


@pytest.fixture(scope="session")
def pod_programs():
    """tc_pod.c compiled and loaded once, its maps pinned under a test-only root."""
    from agent.datapath import preflight
    from agent.datapath.loader import DatapathConfig, PodPrograms, unpin_node

    preflight.ensure_bpffs()
    node = f"test-{os.getpid()}"
    programs = PodPrograms(DatapathConfig(node=node, pin_root=TEST_PIN_ROOT, ct_map_size=4096))
    yield programs
    programs.close()
    unpin_node(node, TEST_PIN_ROOT)


@pytest.fixture(scope="session")
def _collector(pod_programs):
    """The ring buffer opens once per BPF object: one collector for the session."""
    got = []
    ring = pod_programs.table("weft_flows")

    def on_event(ctx, data, size):
        ev = ring.event(data)
        got.append({name: getattr(ev, name) for name, _ in ev._fields_})
        return 0

    ring.open_ring_buffer(on_event)
    return got


@pytest.fixture
def events(pod_programs, _collector):
    """Flow events the programs emit during one test, decoded with BCC's type."""
    pod_programs.bpf.ring_buffer_consume()
    _collector.clear()

    def drain():
        pod_programs.bpf.ring_buffer_consume()
        return list(_collector)
    return drain


def ip_u32(ip: str) -> int:
    return int.from_bytes(socket.inet_aton(ip), "little")
