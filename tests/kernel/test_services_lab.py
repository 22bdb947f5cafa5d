"""Services in a 2-node lab, balanced by Weft's programs alone: spread, the
client's own IP at the server, rejects without endpoints, connections that keep
their backend while others come and go, Maglev, affinity, UDP after removal."""
from __future__ import annotations

import socket
import time
from collections import Counter

import pytest

from cli.lab import netns

from .lab import (MANIFESTS, KeepAlive, apply_text, down_if_up, pods, probe, scrape, up_or_skip, vip,
                  wait_for_flows)

pytestmark = pytest.mark.kernel
CLIENT_NS = "weft-pod-s-client"


@pytest.fixture(scope="module")
def lab():
    up_or_skip(2, MANIFESTS / "services.yaml")
    yield
    down_if_up()


def web_pod_yaml(name: str, node: str, port: int = 8080) -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: s, labels: {{app: web}}}}\n"
            f"spec:\n  nodeName: {node}\n  containers: [{{name: web, ports: [{{name: http, containerPort: {port}}},"
            f" {{name: dns, containerPort: 5353, protocol: UDP}}]}}]\n")


def test_clusterip_spreads_over_every_backend_with_named_target_ports(lab):
    replies = Counter(probe("s/client", "web.s", 80)["reply"] for _ in range(40))
    assert set(replies) == {"web-1", "web-2", "web-3"}, replies  # web-3 serves "http" on 8081


def test_server_sees_the_client_pod_ip(lab):
    client_ip = pods()["s/client"]["status"]["podIP"]
    for _ in range(6):
        assert probe("s/client", "web.s", 80, path="/clientip")["reply"].split(":")[0] == client_ip


def test_udp_service(lab):
    replies = {probe("s/client", "web.s", 53, "udp")["reply"] for _ in range(30)}
    assert replies == {"web-1", "web-2", "web-3"}


def test_no_endpoints_is_rejected_at_once_and_reported(lab):
    for protocol, port in (("tcp", 80), ("udp", 53)):
        result = probe("s/client", "empty.s", port, protocol)
        assert result["result"] == "refused" and result["seconds"] < 0.5, result
    drops = wait_for_flows(lambda f: f.get("dropReasonDesc") == "SERVICE_BACKEND_NOT_FOUND",
                           "--service", "s/empty", "--verdict", "DROPPED")
    assert len(drops) >= 2
    assert all(d["flow"]["destinationService"] == {"name": "empty", "namespace": "s"} for d in drops)


def test_flows_name_the_service_and_the_backend(lab):
    client = probe("s/client", "web.s", 80, path="/clientip")
    sport = int(client["reply"].split(":")[1])
    found = wait_for_flows(lambda f: f.get("l4", {}).get("TCP", {}).get("sourcePort") == sport,
                           "--service", "s/web", "--node", "node-1")
    assert all(f["flow"]["destinationService"] == {"name": "web", "namespace": "s"} for f in found)
    opened = [f["flow"] for f in found if f["flow"]["l4"]["TCP"]["flags"] == {"SYN": True}]
    assert len(opened) == 1
    flow = opened[0]
    assert flow["destinationService"] == {"name": "web", "namespace": "s"}
    assert flow["destination"]["podName"].startswith("web-")
    assert flow["IP"]["destination"] != vip("web"), "the record shows the backend after translation"


def test_connection_keeps_its_backend_while_the_others_leave_and_return(lab, tmp_path):
    conn = KeepAlive(CLIENT_NS, vip("web"), 80)
    try:
        mine = conn.get()
        others = [p for p in ("web-1", "web-2", "web-3") if p != mine]
        nodes = {k.split("/")[1]: p["spec"]["nodeName"] for k, p in pods().items()}
        ports = {"web-3": 8081}
        text = "---\n".join(web_pod_yaml(o, nodes[o], ports.get(o, 8080)) for o in others)
        apply_text(tmp_path, text, "delete")
        for _ in range(5):
            assert conn.get() == mine
        assert {probe("s/client", "web.s", 80)["reply"] for _ in range(10)} == {mine}
        apply_text(tmp_path, text, "apply")
        for _ in range(3):
            assert conn.get() == mine
    finally:
        conn.close()
    assert len({probe("s/client", "web.s", 80)["reply"] for _ in range(40)}) == 3


def test_maglev_connection_survives_a_table_change(lab, tmp_path):
    conn = KeepAlive(CLIENT_NS, vip("web-maglev"), 80)
    try:
        mine = conn.get()
        apply_text(tmp_path, web_pod_yaml("web-4", "node-1"))
        for _ in range(5):
            assert conn.get() == mine
    finally:
        conn.close()
    assert "web-4" in {probe("s/client", "web-maglev.s", 80)["reply"] for _ in range(60)}
    apply_text(tmp_path, web_pod_yaml("web-4", "node-1"), "delete")


def test_session_affinity_sticks_then_expires(lab):
    # timeoutSeconds is 3: consecutive probes (a process each) stay well inside it
    first = probe("s/client", "web-sticky.s", 80)["reply"]
    assert {probe("s/client", "web-sticky.s", 80)["reply"] for _ in range(10)} == {first}
    seen = set()
    for _ in range(14):  # past the timeout a new choice is made among 3: (1/3)^14 to miss it
        time.sleep(4.2)  # timestamps are whole seconds: expiry takes 3 to 4 s
        seen.add(probe("s/client", "web-sticky.s", 80)["reply"])
        if seen - {first}:
            break
    assert seen - {first}, "affinity never expired"


def test_udp_flow_moves_on_when_its_backend_goes(lab, tmp_path):
    with netns.entered(CLIENT_NS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.connect((vip("web"), 53))
    try:
        sock.send(b"/hostname")
        mine = sock.recv(100).decode()
        node = pods()[f"s/{mine}"]["spec"]["nodeName"]
        port = 8081 if mine == "web-3" else 8080
        apply_text(tmp_path, web_pod_yaml(mine, node, port), "delete")
        sock.send(b"/hostname")  # same socket, same tuple: its conntrack entry is gone
        moved = sock.recv(100).decode()
        assert moved != mine and moved.startswith("web-")
        apply_text(tmp_path, web_pod_yaml(mine, node, port), "apply")
    finally:
        sock.close()


def test_hairpin_a_pod_reaches_itself_through_its_service(lab):
    for protocol in ("tcp", "udp"):
        result = probe("s/client", "self.s", 80, protocol)
        assert result["result"] == "connected" and result["reply"] == "client", result
    # its own server sees the hairpin address, as with Cilium's loopback
    assert probe("s/client", "self.s", 80, path="/clientip")["reply"].startswith("169.254.42.1:")


def test_services_work_while_an_agent_is_down_and_after_it_restarts(lab):
    import os
    import signal

    import psutil

    from cli import agents
    from cli.lab import state as lab_state
    from cli.lab.commands import _agent_synced, _start_agent

    conn = KeepAlive(CLIENT_NS, vip("web"), 80)
    try:
        mine = conn.get()
        st = lab_state.load()
        old = st.node("node-1").agent
        os.kill(old.pid, signal.SIGKILL)
        psutil.Process(old.pid).wait(5)
        assert conn.get() == mine
        assert {probe("s/client", "web.s", 80)["reply"] for _ in range(30)} == {"web-1", "web-2", "web-3"}
        with lab_state.locked() as st:
            node = st.node("node-1")
            node.agent = _start_agent(st, node)
        assert not agents.wait_until({"node-1": f"unix://{node.socket}"}, _agent_synced(st.generation), 120)
        for _ in range(5):
            assert conn.get() == mine, "the restarted agent adopted the pinned service and backend ids"
        assert {probe("s/client", "web.s", 80)["reply"] for _ in range(30)} == {"web-1", "web-2", "web-3"}
    finally:
        conn.close()


def test_metrics_count_known_traffic(lab):
    key = "weft_datapath_packets_total{direction=egress,reason=service_backend_not_found}"
    before = scrape("weft-node-1").get(key, 0)
    for _ in range(3):
        assert probe("s/client", "empty.s", 80)["result"] == "refused"
    after = scrape("weft-node-1")
    assert after[key] == before + 3
    assert after["weft_datapath_packets_total{direction=egress,reason=forwarded}"] > 0
    assert after["weft_service_frontends{scope=pods}"] >= 6  # web x2 ports, maglev, sticky, empty x2, self x2
    assert after["weft_endpoints{}"] == 2  # client and web-1 live on node-1
    assert after["weft_flow_events_lost_total{}"] == 0
