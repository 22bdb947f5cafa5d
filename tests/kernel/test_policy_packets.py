"""The policy path on crafted packets (BPF_PROG_TEST_RUN), table-driven.

A small cluster is compiled by the agent's own compiler and written by its own
map writers; each row is one packet into from_pod or to_pod of the local pod
x/a (BPF_PROG_TEST_RUN runs on the loopback device, ifindex 1, which the test
registers as x/a's interface).
"""
from __future__ import annotations

import itertools

import pytest

from agent.datapath.endpoint_map import EndpointMap, EndpointRecord
from agent.datapath.policy_maps import PolicyMaps
from agent.datapath.testrun import test_run as run
from agent.model.cluster import Cluster
from agent.model.identity import MemoryAllocator
from agent.model.policy import EGRESS, EP_F_AUDIT, INGRESS, PolicyCompiler
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey
from tests import packets as pk

from .conftest import ip_u32

pytestmark = pytest.mark.kernel

TC_ACT_OK, TC_ACT_SHOT = 0, 2
DIR_INGRESS, DIR_EGRESS = 1, 2
VERDICT_FORWARDED, VERDICT_DROPPED, VERDICT_AUDIT = 1, 2, 4
DROP_POLICY_DENIED = 133
TEST_IFINDEX = 1
EP_ID = 77

X_A, Y_B, Z_C = "10.1.0.10", "10.1.1.20", "10.1.2.30"
NODE_IP, OTHER_NODE_IP = "172.18.0.11", "172.18.0.12"
POLICIES = [
    {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "web-from-y"}, "spec": {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"port": 80}, {"port": 8000, "endPort": 8080}]}]}},
    {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "from-office"}, "spec": {
        "podSelector": {},
        "ingress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}]}]}},
    {"kind": "NetworkPolicy", "metadata": {"namespace": "x", "name": "dns-to-z"}, "spec": {
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}],
                    "ports": [{"protocol": "UDP", "port": "dns"}]}]}},
]


def _objects():
    out = [{"kind": "Namespace", "metadata": {"name": ns, "labels": {"ns": ns}}} for ns in "xyz"]
    out += [{"kind": "Node", "metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
            for name, ip in (("n1", NODE_IP), ("n2", OTHER_NODE_IP))]
    for ns, pod, ip, node in (("x", "a", X_A, "n1"), ("y", "b", Y_B, "n2"), ("z", "c", Z_C, "n2")):
        out.append({"kind": "Pod", "metadata": {"namespace": ns, "name": pod, "labels": {"pod": pod}},
                    "spec": {"nodeName": node, "containers": [{"ports": [
                        {"containerPort": 5353, "protocol": "UDP", "name": "dns"}]}]},
                    "status": {"phase": "Running", "podIP": ip}})
    return out + POLICIES


@pytest.fixture
def policy(pod_programs):
    """x/a's policy in the maps; yields a function that sets x/a's endpoint flags."""
    cluster = Cluster("n1")
    for obj in _objects():
        meta = obj["metadata"]
        cluster.apply(Event(EventType.ADDED, ObjectKey(obj["kind"], meta.get("namespace", ""), meta["name"]), obj))
    state = PolicyCompiler(MemoryAllocator()).compile(cluster, cluster.local_endpoints())
    assert state.errors == []
    maps = PolicyMaps(pod_programs)
    maps.write(state, {"x/a": EP_ID})
    maps.prune()
    endpoints = EndpointMap(pod_programs.table("weft_endpoints"), 1024)

    def set_flags(extra: int = 0):
        endpoints.write(TEST_IFINDEX, EndpointRecord(EP_ID, X_A, state.pod_identity["x/a"],
                                                     state.endpoint_flags["x/a"] | extra,
                                                     state.prefixes("x/a", INGRESS), state.prefixes("x/a", EGRESS)))
    set_flags()
    yield set_flags, state
    endpoints.delete(TEST_IFINDEX)
    maps.write(type(state)(), {})
    maps.prune()


_sport = itertools.count(20000)

# direction, peer, protocol, port, verdict
ROWS = [
    ("ingress", Y_B, "tcp", 80, TC_ACT_OK),
    ("ingress", Y_B, "tcp", 81, TC_ACT_SHOT),
    ("ingress", Y_B, "tcp", 8000, TC_ACT_OK),
    ("ingress", Y_B, "tcp", 8080, TC_ACT_OK),
    ("ingress", Y_B, "tcp", 8081, TC_ACT_SHOT),
    ("ingress", Y_B, "tcp", 7999, TC_ACT_SHOT),
    ("ingress", Y_B, "udp", 80, TC_ACT_SHOT),
    ("ingress", Z_C, "tcp", 80, TC_ACT_SHOT),
    ("ingress", "192.168.7.7", "tcp", 443, TC_ACT_OK),
    ("ingress", "192.168.7.7", "udp", 9999, TC_ACT_OK),
    ("ingress", "192.168.1.7", "tcp", 443, TC_ACT_SHOT),
    ("ingress", "203.0.113.9", "tcp", 80, TC_ACT_SHOT),
    ("ingress", NODE_IP, "tcp", 10250, TC_ACT_OK),  # the node itself: kubelet probes
    ("ingress", OTHER_NODE_IP, "tcp", 80, TC_ACT_SHOT),
    ("egress", Z_C, "udp", 5353, TC_ACT_OK),
    ("egress", Z_C, "udp", 53, TC_ACT_SHOT),
    ("egress", Z_C, "tcp", 5353, TC_ACT_SHOT),
    ("egress", Y_B, "udp", 5353, TC_ACT_SHOT),
]


def packet(direction: str, peer: str, protocol: str, port: int, sport: int | None = None) -> bytes:
    sport = sport or next(_sport)
    src, dst = (peer, X_A) if direction == "ingress" else (X_A, peer)
    if protocol == "tcp":
        return pk.tcp_packet(src, dst, sport, port)
    return pk.udp_packet(src, dst, sport, port)


def program(pod_programs, direction: str) -> int:
    return (pod_programs.to_pod if direction == "ingress" else pod_programs.from_pod).fd


@pytest.mark.parametrize("direction,peer,protocol,port,verdict", ROWS,
                         ids=[f"{d}-{p}-{pr}-{po}" for d, p, pr, po, _ in ROWS])
def test_policy_verdict(pod_programs, policy, events, direction, peer, protocol, port, verdict):
    assert run(program(pod_programs, direction), packet(direction, peer, protocol, port)).retval == verdict
    ours = [e for e in events() if ip_u32(peer) in (e["saddr"], e["daddr"])]
    assert ours, "every verdict is reported: a new connection or a drop"
    ev = ours[-1]
    assert ev["direction"] == (DIR_INGRESS if direction == "ingress" else DIR_EGRESS)
    if verdict == TC_ACT_SHOT:
        assert (ev["verdict"], ev["drop_reason"]) == (VERDICT_DROPPED, DROP_POLICY_DENIED)
    else:
        _, state = policy
        assert ev["verdict"] == VERDICT_FORWARDED
        if peer != NODE_IP:
            assert state.policy_names[ev["policy_id"]][0] == "x", "the allowing policy is named"


def test_replies_of_an_allowed_connection_pass_where_a_new_one_would_not(pod_programs, policy):
    sport = next(_sport)
    assert run(pod_programs.from_pod.fd, packet("egress", Z_C, "udp", 5353, sport)).retval == TC_ACT_OK
    reply = pk.udp_packet(Z_C, X_A, 5353, sport)
    assert run(pod_programs.to_pod.fd, reply).retval == TC_ACT_OK
    assert run(pod_programs.to_pod.fd, packet("ingress", Z_C, "udp", 5353)).retval == TC_ACT_SHOT


def test_a_policy_change_cuts_an_established_connection_at_its_next_packet(pod_programs, policy):
    set_flags, state = policy
    sport = next(_sport)
    assert run(pod_programs.to_pod.fd, packet("ingress", Y_B, "tcp", 80, sport)).retval == TC_ACT_OK
    ack = pk.tcp_packet(Y_B, X_A, sport, 80, flags=pk.TCP_ACK)
    assert run(pod_programs.to_pod.fd, ack).retval == TC_ACT_OK
    table = pod_programs.table("weft_policy")
    key = next(k for k, v in table.items() if k.ep_id == EP_ID and k.dport == 80)
    del table[key]
    assert run(pod_programs.to_pod.fd, ack).retval == TC_ACT_SHOT


def test_audit_mode_lets_would_be_drops_pass_and_reports_them(pod_programs, policy, events):
    set_flags, _ = policy
    set_flags(EP_F_AUDIT)
    assert run(pod_programs.to_pod.fd, packet("ingress", Z_C, "tcp", 80)).retval == TC_ACT_OK
    ev = [e for e in events() if e["saddr"] == ip_u32(Z_C)][-1]
    assert (ev["verdict"], ev["drop_reason"]) == (VERDICT_AUDIT, DROP_POLICY_DENIED)
    counts = pod_programs.table("weft_policy_verdicts")
    assert sum(counts[counts.Key(2 << 2 | DIR_INGRESS)]) >= 1, "audited verdicts are counted"


def test_an_endpoint_no_policy_selects_is_not_isolated(pod_programs, policy):
    # as the agent writes an endpoint whose pod no policy selects: flags 0
    EndpointMap(pod_programs.table("weft_endpoints"), 1024).write(TEST_IFINDEX, EndpointRecord(EP_ID, X_A, 0, 0))
    assert run(pod_programs.to_pod.fd, packet("ingress", Z_C, "tcp", 80)).retval == TC_ACT_OK
    assert run(pod_programs.from_pod.fd, packet("egress", Y_B, "tcp", 80)).retval == TC_ACT_OK
