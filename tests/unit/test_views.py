"""meshctl identities / policy / bpf views, built from a compiled policy, through gRPC."""
from __future__ import annotations

import ctypes

import grpc
import pytest
from click.testing import CliRunner

from agent.api import server as api_server
from agent.api import views
from agent.api.weft import agent_pb2
from agent.model.identity import MemoryAllocator
from agent.model.policy import PolicyCompiler
from agent.observe.store import FlowStore
from cli import main as cli_main

from .test_policy import cluster_of, namespace, pod, policy


@pytest.fixture
def state():
    c = cluster_of(namespace("x"), namespace("y", {"team": "y"}),
                   pod("a", "10.0.0.1", {"app": "a"}), pod("b", "10.0.1.1", {"app": "b"}, namespace="y", node="n2"),
                   policy({"podSelector": {"matchLabels": {"app": "a"}},
                           "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}],
                                        "ports": [{"port": 8000, "endPort": 8080}, {"port": 53, "protocol": "UDP"}]},
                                       {"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}]}, name="web"),
                   policy({"podSelector": {}, "ingress": [{"ports": [{"port": -5}]}]}, name="broken"))
    return PolicyCompiler(MemoryAllocator()).compile(c, c.local_endpoints())


def test_policy_view_merges_port_prefixes_back_into_ranges_and_names_peers(state):
    resp = views.policy("n1", state, {"x/a": 7})
    (ep,) = resp.endpoints
    assert (ep.namespace, ep.pod_name, ep.endpoint_id, ep.ingress_enforced, ep.egress_enforced) == (
        "x", "a", 7, True, False)
    assert ep.ingress_isolated_by == ["x/web"]
    rules = {(r.peer, r.protocol, r.ports, r.policy) for r in ep.rules}
    assert ("y: app=b", "TCP", "8000-8080", "x/web") in rules
    assert ("y: app=b", "UDP", "53", "x/web") in rules
    assert ("cidr:192.168.0.0/16", "any", "any", "x/web") in rules
    assert ("reserved:host", "any", "any", "") in rules
    assert len(resp.errors) == 1 and "x/broken" in resp.errors[0]


def test_identities_view_lists_reserved_workload_and_cidr_identities(state):
    resp = views.identities("n1", state)
    kinds = {i.kind for i in resp.identities}
    assert kinds == {"reserved", "workload", "cidr"}
    workload = {tuple(i.pods): i for i in resp.identities if i.kind == "workload"}
    assert "k8s:io.kubernetes.pod.namespace=y" in workload[("y/b",)].labels
    assert any(i.labels == ["reserved:world"] and i.id == 2 for i in resp.identities)


class Pair(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class FakeTable:
    """What the view uses of a BCC table: items() of ctypes keys and values."""

    def __init__(self, pairs=()):
        self.pairs = list(pairs)

    def items(self):
        return list(self.pairs)


def test_bpf_view_decodes_structs_with_dotted_addresses_and_limits():
    table = FakeTable([(Pair(0x0100000A, 80), ctypes.c_uint32(3)), (Pair(0x0200000A, 81), ctypes.c_uint32(4))])
    resp = views.bpf_map("n1", ["weft_x"], lambda name: table, "weft_x", limit=1)
    assert resp.truncated and len(resp.entries) == 1
    assert resp.entries[0].key == "saddr=10.0.0.1 port=80" and resp.entries[0].value == "3"
    with pytest.raises(KeyError):
        views.bpf_map("n1", ["weft_x"], lambda name: table, "weft_nope")


def test_meshctl_policy_and_identities_over_grpc(tmp_path, state):
    address = f"unix://{tmp_path}/agent.sock"
    server = api_server.serve(address, FlowStore("n1"), lambda: agent_pb2.StatusResponse(node_name="n1"), {
        "identities": lambda req: views.identities("n1", state),
        "policy": lambda req: views.policy("n1", state, {"x/a": 7}, req.pod),
        "bpf_map": lambda req: views.bpf_map("n1", ["weft_policy"], lambda n: FakeTable(), req.name, req.limit),
    })
    try:
        runner = CliRunner()
        out = runner.invoke(cli_main.main, ["policy", "--server", address])
        assert out.exit_code == 0, out.output
        assert "x/a (endpoint 7" in out.output and "ingress isolated by x/web" in out.output
        assert "8000-8080" in out.output and "not enforced: NetworkPolicy x/broken" in out.output
        out = runner.invoke(cli_main.main, ["identities", "--server", address, "-o", "json"])
        assert out.exit_code == 0 and '"kind": "cidr"' in out.output
        out = runner.invoke(cli_main.main, ["bpf", "weft_nope", "--server", address])
        assert out.exit_code == 1 and "no such bpf_map: weft_nope" in out.output
    finally:
        server.stop(0)
