"""Socket-level load balancing in a 2-node lab: a pod's own TCP connect() to a
Service is given its backend at the socket, by its node's agent alone, and the
connection still reads as one to the Service (getpeername, flow records)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from .lab import MANIFESTS, down_if_up, meshctl, pods, scrape, up_or_skip, vip, wait_for_flows

pytestmark = pytest.mark.kernel
TRANSLATIONS = "weft_socket_lb_translations_total{}"

# Run by `meshctl lab exec`, which puts it in the pod's node's cgroup, as a
# container's process is in its node's: one line per connection.
CLIENT = """
import json, socket, sys
host, port, count, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for _ in range(count):
    out = {}
    try:
        if kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.connect((host, port))
            s.send(b"/hostname")
            out["reply"] = s.recv(100).decode()
        else:
            s = socket.create_connection((host, port), timeout=2)
            out["sock"], out["peer"] = s.getsockname(), s.getpeername()
            s.sendall(b"GET /clientip HTTP/1.0\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            out["reply"] = data.partition(b"\\r\\n\\r\\n")[2].decode()
        s.close()
    except OSError as exc:
        out["error"] = type(exc).__name__
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def lab():
    up_or_skip(2, MANIFESTS / "services.yaml")
    yield
    down_if_up()


def connect_from_pod(pod: str, host: str, port: int, count: int, kind: str = "tcp") -> list[dict]:
    started = _utc(time.time() - 0.1)  # flows carry UTC times; a port may have served an earlier test
    out = meshctl("lab", "exec", pod, "--", "python3", "-c", CLIENT, host, str(port), str(count), kind).stdout
    return [{**json.loads(line), "started": started} for line in out.splitlines()]


def _utc(seconds: float) -> str:
    """A time as flow records write it (nanosecond digits, Z): such strings sort as times do."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def opening_flows(connections: list[dict], timeout: float = 5.0) -> list[dict]:
    """node-1's records of these connections' first packets (SYN), once the agent has them all."""
    sports = {c["sock"][1] for c in connections}
    started = min(c["started"] for c in connections)
    deadline = time.monotonic() + timeout
    while True:
        found = wait_for_flows(lambda f: f.get("l4", {}).get("TCP", {}).get("sourcePort") in sports
                               and f["l4"]["TCP"]["flags"] == {"SYN": True} and f["time"] >= started,
                               "--node", "node-1", "--from-pod", "s/client", "--traffic-direction", "egress",
                               "--last", "1000")
        if len(found) >= len(sports) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def translations(node: int) -> float:
    return scrape(f"weft-node-{node}").get(TRANSLATIONS, 0)


def test_a_pods_connect_gets_its_backend_at_the_socket(lab):
    before = {n: translations(n) for n in (1, 2)}
    web = vip("web")
    got = connect_from_pod("s/client", web, 80, 12)
    assert [c.get("error") for c in got] == [None] * 12, got
    assert all(c["peer"] == [web, 80] for c in got), "getpeername() answers with the Service, as before"
    client_ip = pods()["s/client"]["status"]["podIP"]
    assert {c["reply"].split(":")[0] for c in got} == {client_ip}, "the server sees the pod's own address"
    assert translations(1) == before[1] + 12, "node-1's socket program chose every backend"
    assert translations(2) == before[2], "node-2's programs serve node-2's cgroup only"

    # the records still name the Service, with the backend as the destination
    found = opening_flows(got)
    assert len(found) == 12
    for f in found:
        flow = f["flow"]
        assert flow["destinationService"] == {"name": "web", "namespace": "s"}
        assert flow["destination"]["podName"].startswith("web-") and flow["IP"]["destination"] != web


def test_spread_over_every_backend_maglev_too(lab):
    for service in ("web", "web-maglev"):
        found = opening_flows(connect_from_pod("s/client", vip(service), 80, 40))
        assert len(found) == 40
        assert {f["flow"]["destination"]["podName"] for f in found} == {"web-1", "web-2", "web-3"}, service


def test_what_the_socket_leaves_is_translated_per_packet(lab):
    before = translations(1)
    # UDP, affinity (kept per client address, which connect() does not know yet), no backends
    assert {c.get("reply") for c in connect_from_pod("s/client", vip("web"), 53, 20, "udp")} == \
        {"web-1", "web-2", "web-3"}
    sticky = connect_from_pod("s/client", vip("web-sticky"), 80, 6)
    assert len({c["reply"] for c in sticky}) == 6 and all(c["peer"] == [vip("web-sticky"), 80] for c in sticky)
    refused = connect_from_pod("s/client", vip("empty"), 80, 2)
    assert [c.get("error") for c in refused] == ["ConnectionRefusedError"] * 2
    assert translations(1) == before
    # affinity held: one backend for all six (the per-packet path translated them)
    found = opening_flows(sticky)
    assert len(found) == 6 and len({f["flow"]["destination"]["podName"] for f in found}) == 1


def test_balancing_at_the_socket_goes_on_while_the_agent_is_down(lab):
    import psutil

    from cli import agents
    from cli.lab import state as lab_state
    from cli.lab.commands import _agent_synced, _start_agent

    st = lab_state.load()
    old = st.node("node-1").agent
    os.kill(old.pid, signal.SIGKILL)
    psutil.Process(old.pid).wait(5)
    got = connect_from_pod("s/client", vip("web"), 80, 10)
    assert all(c.get("peer") == [vip("web"), 80] for c in got), got  # the pinned link kept the program
    with lab_state.locked() as st:
        node = st.node("node-1")
        node.agent = _start_agent(st, node)
    assert not agents.wait_until({"node-1": f"unix://{node.socket}"}, _agent_synced(st.generation), 120)
    before = translations(1)
    got = connect_from_pod("s/client", vip("web"), 80, 10)
    assert all(c.get("peer") == [vip("web"), 80] for c in got), got
    assert translations(1) == before + 10, "the restarted agent's program took over the same link"
    cgroup_id = os.stat(node.cgroup).st_ino
    links = json.loads(subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True).stdout)
    assert len([link for link in links if link.get("cgroup_id") == cgroup_id
                and link.get("attach_type") == "cgroup_inet4_connect"]) == 1, "one link, not one per start"
