"""Identities, policy validation and the compiled state, beyond the conformance cases."""
from __future__ import annotations

import multiprocessing
import random

import pytest

from agent.model.cluster import Cluster
from agent.model.identity import (FIRST_WORKLOAD_IDENTITY, IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD,
                                  FileAllocator, IdentityLabels, MemoryAllocator)
from agent.model.netpol import PolicyError, parse_policy
from agent.model.policy import (ALLOWED, AUDITED, DENIED, EGRESS, EP_F_AUDIT, INGRESS, PolicyCompiler,
                                port_prefixes)
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey


def policy(spec, name="p", namespace="x"):
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def cluster_of(*objects, node="n1") -> Cluster:
    c = Cluster(node)
    for obj in objects:
        meta = obj["metadata"]
        c.apply(Event(EventType.ADDED, ObjectKey(obj["kind"], meta.get("namespace", ""), meta["name"]), obj))
    return c


def pod(name, ip, labels, namespace="x", node="n1", ports=()):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"ports": list(ports)}]},
            "status": {"phase": "Running", "podIP": ip}}


def namespace(name, labels=None, annotations=None):
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {},
                                              "annotations": annotations or {}}}


# ---- port ranges ----------------------------------------------------------------

@pytest.mark.parametrize("lo,hi", [(80, 80), (53, 80), (0, 65535), (1, 65535), (8000, 8080), (1024, 2047)])
def test_port_prefixes_cover_exactly_the_range(lo, hi):
    covered = set()
    for value, bits in port_prefixes(lo, hi):
        size = 1 << (16 - bits)
        assert value % size == 0, "blocks are aligned, as an LPM prefix must be"
        block = set(range(value, value + size))
        assert not covered & block
        covered |= block
    assert covered == set(range(lo, hi + 1))


def test_a_range_costs_few_entries():
    assert len(port_prefixes(1, 65535)) == 16
    assert port_prefixes(0, 65535) == [(0, 0)]


# ---- validation -----------------------------------------------------------------

@pytest.mark.parametrize("spec,complaint", [
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}}, "operator 'Maybe'"),
    ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.ingress[0].ports[0].protocol"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}, "70000"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "endPort"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}, "needs a numeric port"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}, "not a CIDR"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
     "is not inside"),
    ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "a peer needs"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "cannot be combined"),
    ({"podSelector": {}, "policyTypes": ["Sideways"]}, "policyTypes"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}, "at least one value"),
])
def test_invalid_policies_are_rejected_naming_the_policy_and_field(spec, complaint):
    with pytest.raises(PolicyError) as exc:
        parse_policy(policy(spec, name="broken"))
    assert "NetworkPolicy x/broken" in str(exc.value) and complaint in str(exc.value)


def test_policy_types_default_as_the_api_defines():
    assert parse_policy(policy({"podSelector": {}})).egress is None
    both = parse_policy(policy({"podSelector": {}, "egress": [{}]}))
    assert both.ingress == () and both.egress is not None


def test_an_invalid_policy_is_reported_and_enforces_nothing():
    c = cluster_of(namespace("x"), pod("a", "10.0.0.1", {"app": "a"}),
                   policy({"podSelector": {}, "ingress": [{"ports": [{"port": -1}]}]}, name="broken"))
    state = PolicyCompiler(MemoryAllocator()).compile(c, c.local_endpoints())
    assert len(state.errors) == 1 and "x/broken" in state.errors[0]
    assert state.decide("x/a", INGRESS, "10.0.0.9", 6, 80) == (ALLOWED, 0)


# ---- identities ----------------------------------------------------------------

def test_replicas_share_an_identity_and_noise_labels_do_not_split_it():
    c = cluster_of(namespace("x", {"team": "t"}),
                   pod("web-1", "10.0.0.1", {"app": "web", "pod-template-hash": "abc"}),
                   pod("web-2", "10.0.0.2", {"app": "web", "pod-template-hash": "def"}),
                   pod("db", "10.0.0.3", {"app": "db"}))
    state = PolicyCompiler(MemoryAllocator()).compile(c, c.local_endpoints())
    ids = state.pod_identity
    assert ids["x/web-1"] == ids["x/web-2"] != ids["x/db"]
    assert min(ids.values()) >= FIRST_WORKLOAD_IDENTITY
    assert "k8s:io.cilium.k8s.namespace.labels.team=t" in state.identities[ids["x/db"]].as_strings()


def test_reserved_identities_of_nodes_and_the_world():
    node = lambda name, ip: {"kind": "Node", "metadata": {"name": name},  # noqa: E731
                             "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
    c = cluster_of(node("n1", "172.18.0.11"), node("n2", "172.18.0.12"))
    state = PolicyCompiler(MemoryAllocator()).compile(c, {})
    assert state.lookup_ip("172.18.0.11")[0] == IDENTITY_HOST
    assert state.lookup_ip("172.18.0.12")[0] == IDENTITY_REMOTE_NODE
    assert state.lookup_ip("8.8.8.8") == (IDENTITY_WORLD, IDENTITY_WORLD)


def _allocate_in_child(path, keys, queue):
    allocator = FileAllocator(path)
    queue.put({k.key(): v for k, v in allocator.allocate(keys).items()})


def test_file_allocator_agrees_across_processes_and_survives_restarts(tmp_path):
    path = tmp_path / "identities.json"
    keys = [IdentityLabels.of("x", [("app", f"a{i}")], {}) for i in range(40)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_allocate_in_child, args=(path, random.sample(keys, len(keys)), queue))
                for _ in range(4)]
    for child in children:
        child.start()
    results = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert all(r == results[0] for r in results), "every agent got the same number for every label set"
    assert sorted(results[0].values()) == list(range(FIRST_WORKLOAD_IDENTITY, FIRST_WORKLOAD_IDENTITY + 40))
    restarted = FileAllocator(path).allocate(keys)
    assert {k.key(): v for k, v in restarted.items()} == results[0]


def test_a_corrupt_identity_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "identities.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="identities.json is corrupt"):
        FileAllocator(path).allocate([IdentityLabels.of("x", [], {})])


# ---- compiled state -------------------------------------------------------------

def test_audit_mode_per_namespace_annotation():
    c = cluster_of(namespace("x", annotations={"policy.weft.dev/audit-mode": "true"}), namespace("y"),
                   pod("a", "10.0.0.1", {"app": "a"}), pod("b", "10.0.1.1", {"app": "b"}, namespace="y"),
                   policy({"podSelector": {}}), policy({"podSelector": {}}, namespace="y"))
    state = PolicyCompiler(MemoryAllocator()).compile(c, c.local_endpoints())
    assert state.endpoint_flags["x/a"] & EP_F_AUDIT and not state.endpoint_flags["y/b"] & EP_F_AUDIT
    assert state.decide("x/a", INGRESS, "10.0.1.1", 6, 80) == (AUDITED, 0)
    assert state.decide("y/b", INGRESS, "10.0.0.1", 6, 80) == (DENIED, 0)
    assert state.isolated_by["y/b"] == {INGRESS: [("y", "p")], EGRESS: []}


def test_the_allowing_policy_is_named_and_the_first_of_several_wins():
    allow = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    c = cluster_of(namespace("x"), pod("a", "10.0.0.1", {"app": "a"}), pod("b", "10.0.0.2", {"app": "b"}),
                   policy(allow, name="zeta"), policy(allow, name="alpha"))
    state = PolicyCompiler(MemoryAllocator()).compile(c, c.local_endpoints())
    verdict, policy_id = state.decide("x/a", INGRESS, "10.0.0.2", 6, 80)
    assert verdict == ALLOWED and state.policy_names[policy_id] == ("x", "alpha")


def test_egress_named_port_resolves_on_each_destination_pod():
    c = cluster_of(namespace("x"),
                   pod("client", "10.0.0.1", {"app": "client"}),
                   pod("web-1", "10.0.0.2", {"app": "web"}, ports=[{"name": "http", "containerPort": 8080}]),
                   pod("api", "10.0.0.3", {"app": "api"}, ports=[{"name": "http", "containerPort": 9090}]),
                   policy({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                           "egress": [{"ports": [{"port": "http"}]}]}))
    state = PolicyCompiler(MemoryAllocator()).compile(c, c.local_endpoints())
    assert state.decide("x/client", EGRESS, "10.0.0.2", 6, 8080)[0] == ALLOWED
    assert state.decide("x/client", EGRESS, "10.0.0.3", 6, 9090)[0] == ALLOWED
    assert state.decide("x/client", EGRESS, "10.0.0.2", 6, 80)[0] == DENIED


def test_recompiling_an_unchanged_cluster_gives_the_same_state():
    c = cluster_of(namespace("x"), pod("a", "10.0.0.1", {"app": "a"}),
                   policy({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}))
    compiler = PolicyCompiler(MemoryAllocator())
    first, second = compiler.compile(c, c.local_endpoints()), compiler.compile(c, c.local_endpoints())
    assert first.entries == second.entries and first.ipcache == second.ipcache
