"""NetworkPolicy as an operator lives with it, in a 2-node lab: what a denied
connection looks like in flows and metrics, what a new policy does to an open
connection, audit mode, and a policy the API server would have rejected."""
from __future__ import annotations

import json
import socket

import pytest

from .lab import (MANIFESTS, KeepAlive, apply_text, down_if_up, meshctl, probe, scrape, up_or_skip,
                  wait_for_flows)

pytestmark = pytest.mark.kernel

ONLY_BYSTANDER = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-bystander, namespace: p}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: bystander}}}]
    ports: [{port: http}]
"""
AUDITED_NAMESPACE = """apiVersion: v1
kind: Namespace
metadata: {name: p, labels: {team: p}, annotations: {policy.weft.dev/audit-mode: "true"}}
"""
PLAIN_NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: p, labels: {team: p}}\n"
BROKEN = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: p}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchExpressions: [{key: app, operator: Maybe, values: [x]}]}}]
"""


@pytest.fixture(scope="module")
def lab():
    up_or_skip(2, MANIFESTS / "policy.yaml")
    yield
    down_if_up()


@pytest.fixture
def only_bystander(lab, tmp_path):
    apply_text(tmp_path, ONLY_BYSTANDER)
    yield
    apply_text(tmp_path, ONLY_BYSTANDER, "delete")


def vip() -> str:
    services = json.loads(meshctl("lab", "get", "services", "-o", "json").stdout)["items"]
    return next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "web")


def test_a_denied_connection_is_a_flow_naming_why_and_a_metric(only_bystander):
    key = "weft_policy_verdicts_total{direction=ingress,verdict=denied}"
    before = scrape("weft-node-1").get(key, 0)
    assert probe("p/client", "web.p", 80)["result"] == "timeout"
    assert probe("p/bystander", "web.p", 80)["result"] == "connected"

    drops = wait_for_flows(lambda f: f.get("dropReasonDesc") == "POLICY_DENIED", "--from-pod", "p/client")
    assert drops, "the denied SYN is a flow record"
    drop = drops[-1]["flow"]
    assert (drop["verdict"], drop["trafficDirection"], drop["nodeName"]) == ("DROPPED", "INGRESS", "node-1")
    assert drop["destination"]["podName"] == "server" and drop["destination"]["identity"] >= 256
    assert drop["source"]["podName"] == "client" and drop["source"]["identity"] >= 256
    assert drop["ingressDeniedBy"] == [{"name": "only-bystander", "namespace": "p", "kind": "NetworkPolicy"}]

    allowed = wait_for_flows(lambda f: bool(f.get("ingressAllowedBy")), "--from-pod", "p/bystander")
    assert allowed and allowed[-1]["flow"]["ingressAllowedBy"][0]["name"] == "only-bystander"
    after = scrape("weft-node-1")
    assert after.get(key, 0) > before
    assert after["weft_flows_processed_total{type=drop,verdict=dropped}"] >= 1
    assert after["weft_flow_events_undecodable_total{}"] == 0, "every drained event reads as a flow"
    assert after["weft_bpf_map_entries{map_name=weft_policy}"] >= 2, "the allow entry and the node's"
    assert after["weft_datapath_sync_duration_seconds_count{}"] >= 1


def test_a_new_policy_cuts_an_open_connection_it_no_longer_allows_and_nothing_else(lab, tmp_path):
    client = KeepAlive("weft-pod-p-client", vip(), 80)
    bystander = KeepAlive("weft-pod-p-bystander", vip(), 80)
    try:
        assert client.get() == "server" and bystander.get() == "server"
        apply_text(tmp_path, ONLY_BYSTANDER)
        with pytest.raises(socket.timeout):
            client.get()
        assert bystander.get() == "server", "a connection the policy allows carries on"
    finally:
        client.close()
        bystander.close()
        apply_text(tmp_path, ONLY_BYSTANDER, "delete")


def test_an_audited_namespace_lets_would_be_drops_pass_and_reports_them(only_bystander, tmp_path):
    apply_text(tmp_path, AUDITED_NAMESPACE)
    try:
        assert probe("p/client", "web.p", 80)["result"] == "connected"
        audited = wait_for_flows(lambda f: f.get("verdict") == "AUDIT", "--from-pod", "p/client")
        assert audited and audited[-1]["flow"]["dropReasonDesc"] == "POLICY_DENIED"
        assert scrape("weft-node-1").get("weft_policy_verdicts_total{direction=ingress,verdict=audit}", 0) >= 1
    finally:
        apply_text(tmp_path, PLAIN_NAMESPACE)
    assert probe("p/client", "web.p", 80)["result"] == "timeout", "enforcing again without the annotation"


def test_an_invalid_policy_is_reported_and_the_valid_ones_hold(only_bystander, tmp_path):
    apply_text(tmp_path, BROKEN)
    try:
        status = json.loads(meshctl("status", "-o", "json").stdout)
        for node in ("node-1", "node-2"):
            problems = " ".join(status[node].get("errors", []))
            assert "NetworkPolicy p/broken" in problems and "Maybe" in problems
        assert scrape("weft-node-1")["weft_policy_invalid{}"] == 1
        assert probe("p/client", "web.p", 80)["result"] == "timeout"
        assert probe("p/bystander", "web.p", 80)["result"] == "connected"
    finally:
        apply_text(tmp_path, BROKEN, "delete")


def test_meshctl_policy_identities_bpf_and_status_show_what_is_programmed(only_bystander):
    policy = json.loads(meshctl("policy", "--pod", "p/server", "-o", "json").stdout)
    (endpoint,) = policy["node-1"]["endpoints"]
    assert endpoint["ingressEnforced"] and endpoint["ingressIsolatedBy"] == ["p/only-bystander"]
    rule = next(r for r in endpoint["rules"] if r.get("policy") == "p/only-bystander")
    assert (rule["direction"], rule["protocol"], rule["ports"]) == ("ingress", "TCP", "8080")
    assert "app=bystander" in rule["peer"]
    assert policy["node-2"].get("endpoints", []) == [], "p/server is not node-2's endpoint"

    identities = json.loads(meshctl("identities", "-o", "json").stdout)
    by_id = {i["id"]: i for i in identities["node-1"]["identities"]}
    assert by_id[rule["peerIdentity"]]["pods"] == ["p/bystander"]
    assert identities["node-1"]["identities"] == identities["node-2"]["identities"], "both nodes agree"

    dump = meshctl("bpf", "weft_policy", "--server", "unix:///run/weft/lab/agents/node-1.sock").stdout
    assert f"identity={rule['peerIdentity']}" in dump and "dport=8080" in dump
    assert "weft_ipcache" in meshctl("bpf").stdout

    status = meshctl("status").stdout
    assert "map weft_policy:" in status and "kernel: BTF" in status and "program: from_pod" in status
