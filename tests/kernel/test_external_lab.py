"""Services for clients outside the cluster, on the nodes' uplinks: NodePort
and external IPs, externalTrafficPolicy Cluster (SNAT to the node for a remote
backend) and Local (the client's own address, local backends only, with a
truthful healthCheckNodePort)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from cli.lab import netns

from .lab import MANIFESTS, down_if_up, meshctl, probe, up_or_skip, wait_for_flows

pytestmark = pytest.mark.kernel
NODE1, NODE2, CLIENT = "172.18.0.11", "172.18.0.12", "172.18.0.200"


@pytest.fixture(scope="module")
def lab():
    up_or_skip(2, MANIFESTS / "external.yaml")
    yield
    down_if_up()


def health(node: str, port: int) -> tuple[int, dict]:
    with netns.entered("weft-ext"):
        try:
            response = urllib.request.urlopen(f"http://{node}:{port}/", timeout=2)
            return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def health_port() -> int:
    services = json.loads(meshctl("lab", "get", "services", "-o", "json").stdout)["items"]
    return next(s["spec"]["healthCheckNodePort"] for s in services if s["metadata"]["name"] == "local")


def test_nodeport_reaches_every_backend_from_any_node(lab):
    for node in (NODE1, NODE2):
        replies = {probe("external", node, 30080)["reply"] for _ in range(24)}
        assert replies == {"w1", "w2"}, node
    assert {probe("external", NODE2, 30053, "udp")["reply"] for _ in range(24)} == {"w1", "w2"}


def test_remote_backend_sees_the_node_local_backend_sees_the_client(lab):
    # eTP=Cluster to a backend on another node: SNAT to the node it came in on
    assert probe("external", NODE1, 30082, path="/clientip")["reply"].split(":")[0] == NODE1
    # eTP=Local: the client's own address, and only this node's backend answers
    for node, pod in ((NODE1, "w1"), (NODE2, "w2")):
        for _ in range(6):
            assert probe("external", node, 30081)["reply"] == pod
            assert probe("external", node, 30081, path="/clientip")["reply"].split(":")[0] == CLIENT


def download(node: str, port: int, size: int) -> int:
    """Bytes of GET /bytes/<size> received from outside before the server closed (or 10 s passed)."""
    import socket

    got = 0
    with netns.entered("weft-ext"):
        with socket.create_connection((node, port), timeout=10) as s:
            s.sendall(f"GET /bytes/{size} HTTP/1.0\r\n\r\n".encode())
            while chunk := s.recv(1 << 16):
                got += len(chunk)
    return got


def test_bulk_replies_leave_the_node_in_full(lab):
    # a backend's replies come in TSO-sized packets, far above the link's MTU:
    # forwarded by the datapath (local backend, and a remote one's SNATed reply)
    # they must pass whole, as the stack would pass them to be segmented
    size = 8 << 20
    for port in (30081, 30082):
        assert download(NODE1, port, size) > size, port


def test_external_ip(lab):
    assert {probe("external", "192.0.2.10", 80)["reply"] for _ in range(24)} == {"w1", "w2"}


def test_nodeport_without_endpoints_is_refused_at_once(lab):
    result = probe("external", NODE1, 30083)
    assert result["result"] == "refused" and result["seconds"] < 0.5


def test_flows_show_traffic_from_outside(lab):
    client = probe("external", NODE1, 30081, path="/clientip")
    sport = int(client["reply"].split(":")[1])
    found = wait_for_flows(lambda f: f.get("l4", {}).get("TCP", {}).get("sourcePort") == sport,
                           "--node", "node-1", "--from-ip", CLIENT)
    flow = next(f["flow"] for f in found if f["flow"].get("traceObservationPoint") == "FROM_NETWORK")
    assert flow["destinationService"] == {"name": "local", "namespace": "n"}
    assert flow["source"]["identity"] == 2 and flow["destination"]["podName"] == "w1"


def test_meshctl_services_shows_what_each_node_programmed(lab):
    listed = json.loads(meshctl("services", "--namespace", "n", "-o", "json").stdout)
    assert sorted(listed) == ["node-1", "node-2"]
    for node, ip in (("node-1", NODE1), ("node-2", NODE2)):
        frontends = {(f["ip"], f["port"], f["scope"]): f for f in listed[node]}
        assert all(f["programmed"] for f in listed[node])
        nodeport = frontends[(ip, 30080, "external")]
        assert {b["ip"] for b in nodeport["backends"]} == {"10.244.1.2", "10.244.2.2"}
        assert sum(1 for b in nodeport["backends"] if b.get("local")) == 1
        assert "backends" not in frontends[(ip, 30083, "external")]  # `nothing`: rejected
    table = meshctl("services", "--namespace", "n").stdout
    assert "n/nothing:http" in table and "<none: rejected>" in table


def test_health_check_node_port_tells_where_local_backends_are(lab, tmp_path):
    port = health_port()
    for node in (NODE1, NODE2):
        status, body = health(node, port)
        assert status == 200 and body == {"service": {"namespace": "n", "name": "local"}, "localEndpoints": 1}
    w2 = tmp_path / "w2.yaml"
    w2.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: w2, namespace: n}\n")
    meshctl("lab", "delete", "-f", str(w2))
    status, body = health(NODE2, port)
    assert status == 503 and body["localEndpoints"] == 0
    assert health(NODE1, port)[0] == 200
    # node-2 has no local backend: eTP=Local traffic there is refused, not sent elsewhere
    assert probe("external", NODE2, 30081)["result"] == "refused"
    assert probe("external", NODE1, 30081)["reply"] == "w1"

