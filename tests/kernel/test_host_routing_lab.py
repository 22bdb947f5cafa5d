"""Host routing in a 2-node lab: traffic between pods, on one node or across
the two (their pod CIDRs are the native-routing CIDR), is forwarded by the
datapath, not by the nodes' IP stacks, and still looks routed to the pods."""
from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from .lab import MANIFESTS, down_if_up, meshctl, pods, probe, up_or_skip

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def lab():
    up_or_skip(2, MANIFESTS / "services.yaml")
    yield
    down_if_up()


def forwarded(node: str) -> int:
    """Packets the node's IP stack forwarded (Ip: ForwDatagrams in its /proc/net/snmp)."""
    from cli.lab import topology

    lines = [line.split() for line in subprocess.run(
        ["ip", "netns", "exec", topology.node_netns(node), "cat", "/proc/net/snmp"],
        capture_output=True, text=True, check=True).stdout.splitlines() if line.startswith("Ip:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["ForwDatagrams"])


def pod_ip(name: str) -> str:
    return pods()[name]["status"]["podIP"]


def connections(count: int) -> None:
    """`count` HTTP exchanges from s/client to a pod on its node and one on the other."""
    for target in ("s/web-1", "s/web-2"):
        for _ in range(count):
            assert probe("s/client", pod_ip(target), 8080)["result"] == "connected"


def ping(target: str, *args: str) -> str:
    return meshctl("lab", "exec", "s/client", "--", "ping", "-n", "-c", "2", "-i", "0.2", "-W", "2",
                   *args, pod_ip(target), check=False).stdout


def test_pod_traffic_is_not_forwarded_by_the_nodes_stack(lab):
    connections(1)  # the nodes learn the pods' MACs (an unresolved neighbour is the stack's job)
    before = {node: forwarded(node) for node in ("node-1", "node-2")}
    connections(10)
    # 20 connections, about 10 packets each, crossed node-1 and 10 of them node-2
    assert {node: forwarded(node) - n for node, n in before.items()} == {"node-1": 0, "node-2": 0}


def test_routed_packets_lose_a_hop_per_node(lab):
    assert re.search(r"ttl=63", ping("s/web-1")), "one node between client and web-1"
    assert re.search(r"ttl=62", ping("s/web-2")), "two nodes between client and web-2"
    # a packet with no hop left is the stack's, which answers for the node
    assert "Time to live exceeded" in ping("s/web-1", "-t", "1")


def test_legacy_host_routing_leaves_forwarding_to_the_stack(lab):
    import psutil

    from cli import agents
    from cli.lab import state as lab_state
    from cli.lab.commands import _agent_synced, _start_agent

    def restart(*args: str) -> None:
        with lab_state.locked() as st:
            node = st.node("node-1")
            os.kill(node.agent.pid, signal.SIGTERM)
            psutil.Process(node.agent.pid).wait(30)
            node.agent = _start_agent(st, node, args)
        assert not agents.wait_until({"node-1": f"unix://{node.socket}"}, _agent_synced(st.generation), 120)

    restart("--host-routing", "legacy")
    try:
        before = forwarded("node-1")
        connections(5)
        assert forwarded("node-1") - before >= 10 * 5, "every packet of 10 connections, both ways"
    finally:
        restart()
    before = forwarded("node-1")
    connections(5)
    assert forwarded("node-1") == before
