"""The policy compiler against every NetworkPolicy conformance case, no kernel.

Each case runs on a model cluster of two nodes. Each node's agent compiles its
own view, and a probe src->dst is decided the way the datapath decides it:
the egress lookup at the source's node, then the ingress lookup at the
destination's node, each in that node's compiled maps.
"""
from __future__ import annotations

import pytest

from agent.model.cluster import Cluster
from agent.model.identity import MemoryAllocator
from agent.model.policy import ALLOWED, EGRESS, INGRESS, PolicyCompiler
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey
from tests import conformance

NODES = ("node-1", "node-2")
PROTO = {"TCP": 6, "UDP": 17}


class TwoNodes:
    """Both agents' models, fed the same events, as the lab would feed them."""

    def __init__(self):
        allocator = MemoryAllocator()  # shared: identities agree cluster-wide
        self.clusters = {n: Cluster(n) for n in NODES}
        self.compilers = {n: PolicyCompiler(allocator) for n in NODES}
        self.addresses: dict[str, str] = {}
        self.node_of: dict[str, str] = {}
        for i, node in enumerate(NODES, 1):
            self._send(EventType.ADDED, {"kind": "Node", "metadata": {"name": node},
                                         "status": {"addresses": [{"type": "InternalIP",
                                                                   "address": f"172.18.0.1{i}"}]}})

    def _send(self, type_, obj):
        meta = obj["metadata"]
        key = ObjectKey(obj["kind"], meta.get("namespace", ""), meta["name"])
        for cluster in self.clusters.values():
            cluster.apply(Event(type_, key, obj))

    def apply(self, obj):
        obj = dict(obj)
        if obj["kind"] == "Pod":
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            if key not in self.addresses:  # schedule round-robin, as the lab does
                index = len(self.addresses)
                self.node_of[key] = NODES[index % 2]
                self.addresses[key] = f"10.244.{index % 2 + 1}.{10 + index}"
            obj["spec"] = {**obj["spec"], "nodeName": self.node_of[key]}
            obj["status"] = {"phase": "Running", "podIP": self.addresses[key]}
        self._send(EventType.MODIFIED, obj)

    def delete(self, key):
        kind, ns, name = key
        self._send(EventType.DELETED, {"kind": kind, "metadata": {"name": name, "namespace": ns}})

    def compile(self):
        self.states = {n: self.compilers[n].compile(c, c.local_endpoints()) for n, c in self.clusters.items()}
        for state in self.states.values():
            assert state.errors == []

    def allowed(self, src: str, dst: str, proto: int, port: int) -> bool:
        src_ip, dst_ip = self.addresses[src], self.addresses[dst]
        out, _ = self.states[self.node_of[src]].decide(src, EGRESS, dst_ip, proto, port)
        into, _ = self.states[self.node_of[dst]].decide(dst, INGRESS, src_ip, proto, port)
        return out == ALLOWED and into == ALLOWED


def run_case(case: dict) -> list[str]:
    nodes = TwoNodes()
    model = conformance.ModelCluster.initial()
    for obj in model.objects.values():
        nodes.apply(obj)
    expected = conformance.expectations(case)
    failures = []
    for step, spec in enumerate(case["steps"], 1):
        for action in spec.get("actions") or []:
            applied, deleted = model.apply(action, nodes.addresses)
            for obj in applied:
                nodes.apply(obj)
            for key in deleted:
                nodes.delete(key)
        nodes.compile()
        for probe in spec["probes"]:
            proto, port = probe["protocol"], probe["port"]
            denied = {f"{s}->{d}" for s, d in conformance.pairs(model.pods())
                      if not nodes.allowed(s, d, PROTO[proto], port)}
            want = expected[(step, proto, port)]
            if denied != want:
                failures.append(f"step {step} {proto}/{port}: unexpectedly denied "
                                f"{sorted(denied - want)}, unexpectedly allowed {sorted(want - denied)}")
    return failures


CASES = conformance.load_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_conformance_case(case):
    assert run_case(case) == [], case["name"]


def test_the_suite_is_complete():
    assert len(CASES) >= 55
