"""A 2-node lab, end to end: pods talk within and across nodes over TCP and
UDP through Weft's datapath, the flows say so, and `lab down` leaves nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from cli.lab import state as lab_state

from .lab import MANIFESTS, down_if_up, meshctl, pods, probe, up_or_skip, wait_for_flows

pytestmark = pytest.mark.kernel


def _netns() -> set[str]:
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
               .stdout.split()) - {"(id:"}


def _root_links() -> set[str]:
    out = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    return {link["ifname"] for link in out}


@pytest.fixture(scope="module")
def lab():
    before = {"netns": _netns(), "links": _root_links()}
    up_or_skip(2, MANIFESTS / "two-nodes.yaml")
    yield before
    down_if_up()


def test_pods_run_on_both_nodes_with_ips_from_their_node_cidr(lab):
    running = pods()
    assert {k: p["spec"]["nodeName"] for k, p in running.items() if k in ("t/a", "t/b", "t/c")} == {
        "t/a": "node-1", "t/b": "node-1", "t/c": "node-2"}
    for key, pod in running.items():
        node = int(pod["spec"]["nodeName"].split("-")[1])
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"].startswith(f"10.244.{node}."), key


def test_deployment_expands_to_its_replicas(lab):
    web = [p for k, p in pods().items() if k.startswith("t/web-")]
    assert len(web) == 2
    for pod in web:
        assert pod["metadata"]["labels"]["app"] == "web"
        assert probe("t/a", f"t/{pod['metadata']['name']}", 80)["reply"] == pod["metadata"]["name"]


def test_agents_program_every_local_pod(lab):
    status = json.loads(meshctl("status", "-o", "json").stdout)
    by_node = {node: {f"{e['namespace']}/{e['podName']}" for e in st["endpoints"] if e["attached"]}
               for node, st in status.items()}
    expected = {}
    for key, pod in pods().items():
        expected.setdefault(pod["spec"]["nodeName"], set()).add(key)
    assert by_node == expected


@pytest.mark.parametrize("src,dst", [("t/a", "t/b"), ("t/a", "t/c"), ("t/c", "t/b")],
                         ids=["same-node", "cross-node", "cross-node-back"])
@pytest.mark.parametrize("protocol,port", [("tcp", 8080), ("udp", 5353)])
def test_pods_talk_and_the_server_sees_the_client(lab, src, dst, protocol, port):
    running = pods()
    result = probe(src, dst, port, protocol)
    assert result["result"] == "connected"
    assert result["reply"] == dst.split("/")[1]  # /hostname answers the pod's name
    client = probe(src, dst, port, protocol, path="/clientip")
    assert client["reply"].split(":")[0] == running[src]["status"]["podIP"]


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_closed_port_is_refused(lab, protocol):
    result = probe("t/a", "t/c", 9999, protocol)
    assert result["result"] == "refused"


@pytest.mark.parametrize("protocol,port", [("tcp", 8080), ("udp", 5353)])
def test_flows_report_each_side_of_a_cross_node_connection(lab, protocol, port):
    running = pods()
    a_ip, c_ip = running["t/a"]["status"]["podIP"], running["t/c"]["status"]["podIP"]
    client = probe("t/a", "t/c", port, protocol, path="/clientip")
    sport = int(client["reply"].split(":")[1])
    l4 = protocol.upper()

    def same_connection(f):
        return (f["IP"]["source"] == a_ip and f["IP"]["destination"] == c_ip
                and f.get("l4", {}).get(l4, {}).get("sourcePort") == sport
                and f["l4"][l4].get("destinationPort") == port)

    def replies(f):
        return (f["IP"]["source"] == c_ip and f["IP"]["destination"] == a_ip
                and f.get("l4", {}).get(l4, {}).get("destinationPort") == sport)

    found = wait_for_flows(same_connection, "--last", "500")
    opened = [f for f in found if not f["flow"].get("isReply") and
              (protocol == "udp" or f["flow"]["l4"]["TCP"]["flags"] == {"SYN": True})]
    by_node = {f["flow"]["nodeName"]: f["flow"] for f in opened}
    assert sorted(by_node) == ["node-1", "node-2"], found
    assert len(opened) == 2, "the connection is new once at each endpoint"
    egress, ingress = by_node["node-1"], by_node["node-2"]
    for flow in (egress, ingress):
        assert flow["verdict"] == "FORWARDED"
        assert flow["source"]["podName"] == "a" and flow["source"]["namespace"] == "t"
        assert flow["destination"]["podName"] == "c"
        assert "k8s:app=c" in flow["destination"]["labels"]
        assert flow["interface"]["name"].startswith("lxc")
        assert flow["isReply"] is False
    assert egress["trafficDirection"] == "EGRESS"
    assert egress["traceObservationPoint"] == "FROM_ENDPOINT"
    assert egress["source"]["ID"] > 0  # the local endpoint carries its id
    assert ingress["trafficDirection"] == "INGRESS"
    assert ingress["traceObservationPoint"] == "TO_ENDPOINT"
    assert ingress["destination"]["ID"] > 0
    answers = wait_for_flows(replies, "--last", "500")
    assert {f["flow"]["nodeName"] for f in answers} == {"node-1", "node-2"}
    assert all(f["flow"]["isReply"] is True for f in answers)
    if protocol == "udp":
        assert len(found) == 2 and len(answers) == 2, "medium: a UDP exchange is one record a side"
        return
    # medium aggregation: each flag once where packets leave a pod (a's on node-1, c's answers on
    # node-2); where they enter one, only the new connection and the first answer
    flags = {}
    for node in ("node-1", "node-2"):
        sent = [tuple(sorted(f["flow"]["l4"]["TCP"]["flags"])) for f in found if f["flow"]["nodeName"] == node]
        back = [tuple(sorted(f["flow"]["l4"]["TCP"]["flags"])) for f in answers if f["flow"]["nodeName"] == node]
        assert len(sent) == len(set(sent)) and len(back) == len(set(back)), (sent, back)
        assert sent[0] == ("SYN",) and back[0] == ("ACK", "SYN")
        flags[node] = (sent, back)
    assert ("ACK", "FIN") in flags["node-1"][0], "a's FIN, where it left a"
    assert flags["node-2"][0] == [("SYN",)], "a's packets entering c: only the new connection"
    assert flags["node-1"][1] == [("ACK", "SYN")], "c's answers entering a: only the first"


def test_flow_filters_and_output_formats(lab):
    probe("t/b", "t/c", 5353, "udp")
    probe("t/b", "t/a", 8080, "tcp")
    udp_to_c = wait_for_flows(lambda f: True, "--from-pod", "t/b", "--to-pod", "t/c",
                              "--protocol", "udp", "--last", "100")
    assert udp_to_c and all("UDP" in f["flow"]["l4"] and f["flow"]["destination"]["podName"] == "c"
                            and f["flow"]["source"]["podName"] == "b" for f in udp_to_c)
    on_node_2 = wait_for_flows(lambda f: True, "--node", "node-2", "--pod", "t/b")
    assert on_node_2 and all(f["flow"]["nodeName"] == "node-2" for f in on_node_2)
    compact = meshctl("flows", "--from-pod", "t/b", "--to-pod", "t/a").stdout.splitlines()
    # sent by b to a: "t/b:PORT -> t/a:8080", or a's answers to b: "t/a:PORT <- t/b:8080"
    assert compact and all(("] t/b:" in line.replace(": t/b:", "] t/b:") and " -> t/a:" in line)
                           or (" <- t/b:" in line) for line in compact), compact
    assert all("FORWARDED" in line for line in compact)
    assert any(" -> t/a:8080 " in line for line in compact)
    table = meshctl("flows", "-o", "table", "--last", "3").stdout.splitlines()
    assert table[0].split() == ["TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY"]
    assert len(table) == 4


def test_last_and_time_order_across_nodes(lab):
    last = meshctl("flows", "-o", "json", "--last", "6").stdout.splitlines()
    times = [json.loads(line)["time"] for line in last]
    assert len(times) == 6 and times == sorted(times)


def test_bad_manifests_are_reported_and_the_rest_applied(lab):
    result = meshctl("lab", "apply", "-f", str(MANIFESTS / "bad.yaml"), check=False)
    assert result.returncode == 1
    assert "bad.yaml, document 2" in result.stderr and "metadata.name is missing" in result.stderr
    assert "bad.yaml, document 3" in result.stderr and "unknown kind 'Gadget'" in result.stderr
    assert "pod/good created" in result.stdout
    assert probe("t/a", "t/good", 8080)["reply"] == "good"
    malformed = meshctl("lab", "apply", "-f", str(MANIFESTS / "malformed.yaml"), check=False)
    assert malformed.returncode == 1 and "malformed.yaml: not valid YAML" in malformed.stderr
    assert probe("t/a", "t/good", 8080)["result"] == "connected"  # nothing else broke


def test_agent_reports_bad_file_in_its_manifests_dir_and_keeps_working(lab):
    bad = lab_state.LAB_DIR / "manifests" / "zz-hand-edited.yaml"
    bad.write_text("kind: Pod\nmetadata: {name: [\n")
    try:
        status = {}
        for _ in range(30):
            status = json.loads(meshctl("status", "-o", "json").stdout)
            if all(any("zz-hand-edited.yaml" in e for e in st.get("errors", [])) for st in status.values()):
                break
        assert all(any("zz-hand-edited.yaml" in e and "not valid YAML" in e for e in st["errors"])
                   for st in status.values()), status
        assert probe("t/a", "t/c", 8080)["result"] == "connected"
    finally:
        bad.unlink()


def test_deleted_pod_is_gone_from_lab_and_datapath(lab):
    good = pods()["t/good"]
    netns = "weft-pod-t-good"
    assert netns in _netns()
    doc = MANIFESTS / "bad.yaml"
    meshctl("lab", "delete", "-f", str(doc), check=False)
    assert "t/good" not in pods()
    assert netns not in _netns()
    status = json.loads(meshctl("status", "-o", "json").stdout)
    assert all(e["podName"] != "good" for st in status.values() for e in st["endpoints"])
    assert probe("t/a", good["status"]["podIP"], 8080)["result"] != "connected"


def test_commands_without_a_lab_say_so():
    env_dir = "/nonexistent-weft-lab"
    result = subprocess.run([meshctl.__globals__["MESHCTL"], "lab", "get", "pods"], capture_output=True,
                            text=True, env={**os.environ, "WEFT_LAB_DIR": env_dir})
    assert result.returncode == 1 and "no lab is up" in result.stderr


def _endpoint_ids(node: str) -> dict[str, int]:
    st = json.loads(meshctl("status", "-o", "json").stdout)[node]
    return {f"{e['namespace']}/{e['podName']}": e["id"] for e in st.get("endpoints", [])}


def test_datapath_outlives_its_agent_and_a_new_agent_adopts_it(lab):
    from cli.lab.commands import _agent_synced, _start_agent
    from cli import agents

    before = _endpoint_ids("node-2")
    assert before
    st = lab_state.load()
    old = st.node("node-2").agent
    os.kill(old.pid, signal.SIGKILL)
    psutil.Process(old.pid).wait(5)
    # no agent on node-2: its programs stay attached and traffic still flows
    assert probe("t/a", "t/c", 8080)["result"] == "connected"
    assert probe("t/a", "t/c", 5353, "udp")["result"] == "connected"

    with lab_state.locked() as st:
        node = st.node("node-2")
        node.agent = _start_agent(st, node)
    lagging = agents.wait_until({"node-2": f"unix://{node.socket}"}, _agent_synced(st.generation), 120)
    assert not lagging, lagging
    assert _endpoint_ids("node-2") == before, "endpoint ids are read back from the pinned map"
    client = probe("t/a", "t/c", 8080, path="/clientip")
    sport = int(client["reply"].split(":")[1])
    resumed = wait_for_flows(lambda f: f["nodeName"] == "node-2" and not f.get("isReply")
                             and f["l4"].get("TCP", {}).get("sourcePort") == sport
                             and f["l4"]["TCP"]["flags"] == {"SYN": True}, "--node", "node-2")
    assert len(resumed) == 1, "flows resume with the new agent"


def test_down_leaves_nothing(lab):
    st = lab_state.load()
    procs = [n.agent for n in st.nodes] + [p.server for p in st.pods.values() if p.server]
    made_netns = set(st.netns) | {p.netns for p in st.pods.values()}
    cgroups = [Path(n.cgroup) for n in st.nodes if n.cgroup]
    assert all(p.alive() for p in procs)
    assert cgroups and all(c.is_dir() for c in cgroups), "each node has its cgroup for socket programs"
    meshctl("lab", "down")
    assert not lab_state.exists()
    assert not any(p.alive() for p in procs)
    assert not (_netns() & made_netns)
    assert _netns() == lab["netns"]
    assert _root_links() == lab["links"]
    assert not any(Path("/sys/fs/bpf/weft", n.name).exists() for n in st.nodes)
    assert not any(c.exists() for c in cgroups) and not cgroups[0].parent.exists()
    assert not Path("/run/weft/lab").exists()
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    assert "10.244." not in routes and "172.18.0." not in routes and "10.96." not in routes
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if "cli.lab.podserver" in " ".join(p.info["cmdline"] or [])
                 or "agent.main" in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
