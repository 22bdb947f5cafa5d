"""tc_node.c's from_network on crafted packets (BPF_PROG_TEST_RUN): external
clients reaching a Service whose backend is on another node are SNATed to the
node, and the NAT entry remembers which frontend each connection came to."""
from __future__ import annotations

import pytest

from agent.datapath.lb_maps import LBMaps
from agent.datapath.maps import be32_to_ip
from agent.datapath.node_config import NodeConfig
from agent.datapath.testrun import test_run as run
from agent.model.services import EXTERNAL, Backend, Frontend, ServiceFrontend
from tests import packets as pk

pytestmark = pytest.mark.kernel

NODE_IP, CLIENT = "172.31.0.1", "203.0.113.7"
REMOTE = Backend("10.244.8.20", 8080, "TCP")  # on another node: not local


@pytest.fixture
def external(pod_programs):
    node = NodeConfig(pod_programs)
    node.set_ipv4(NODE_IP)
    lb = LBMaps(pod_programs)
    plan = {}
    for vip, port in (("198.51.100.1", 80), ("198.51.100.2", 81)):
        fe = Frontend(vip, port, "TCP", EXTERNAL)
        plan[fe] = ServiceFrontend("x", f"web-{port}", "http", fe, (REMOTE,))
    lb.sync(plan)
    yield
    lb.sync({})
    node.set_ipv4("")
    for name in ("weft_ct", "weft_snat4"):
        pod_programs.table(name).clear()


def snat_entry(pod_programs, nat_port: int):
    table = pod_programs.table("weft_snat4")
    return next(v for k, v in table.items() if k.nat_port == nat_port)


def test_a_client_port_reused_for_another_frontend_is_answered_from_that_frontend(pod_programs, external):
    first = pk.Parsed(run(pod_programs.from_network.fd, pk.tcp_packet(CLIENT, "198.51.100.1", 45000, 80)).packet)
    assert (first.src, first.dst, first.dport) == (NODE_IP, REMOTE.ip, 8080), "SNATed to the node"
    entry = snat_entry(pod_programs, first.sport)
    assert (be32_to_ip(entry.vip), entry.vport) == ("198.51.100.1", 80)
    # the same client port, now to the other frontend of the same backend
    second = pk.Parsed(run(pod_programs.from_network.fd, pk.tcp_packet(CLIENT, "198.51.100.2", 45000, 81)).packet)
    entry = snat_entry(pod_programs, second.sport)
    assert (be32_to_ip(entry.vip), entry.vport) == ("198.51.100.2", 81), \
        "the backend's replies must come back from the frontend this connection used"
