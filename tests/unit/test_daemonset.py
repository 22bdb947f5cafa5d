"""daemonset/: every manifest parses, and the RBAC rules cover exactly what the agent reads."""
from __future__ import annotations

from pathlib import Path

import yaml

from agent.sources import identities
from agent.sources.kubernetes import RESOURCES

DAEMONSET = Path(__file__).resolve().parents[2] / "daemonset"
GROUP_OF = {"CoreV1Api": "", "NetworkingV1Api": "networking.k8s.io", "DiscoveryV1Api": "discovery.k8s.io"}
PLURAL = {"Namespace": "namespaces", "Node": "nodes", "Pod": "pods", "Service": "services",
          "NetworkPolicy": "networkpolicies", "EndpointSlice": "endpointslices"}


def manifests() -> list[dict]:
    docs = []
    for path in sorted(DAEMONSET.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [d for d in manifests() if d["kind"] == kind]


def test_every_manifest_is_a_kubernetes_object_in_weft_system():
    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                         "ConfigMap", "DaemonSet"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
        if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            assert d["metadata"]["namespace"] == "weft-system", d["kind"]
    assert not list(DAEMONSET.glob("*.json")), "kubectl apply -f daemonset/ must find only manifests"


def test_rbac_lets_the_agent_list_and_watch_every_kind_it_reads_and_write_only_its_identities():
    (role,) = by_kind("ClusterRole")
    granted = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    for kind, (group, _) in RESOURCES.items():
        assert {"list", "watch"} <= granted.get((GROUP_OF[group], PLURAL[kind]), set()), kind
    writes = {key for key, verbs in granted.items() if verbs & {"create", "update", "patch", "delete"}}
    assert writes == {("", "events"), (identities.GROUP, identities.PLURAL)}, \
        "the agent writes only its Events and identities"
    assert granted[(identities.GROUP, identities.PLURAL)] >= {"get", "list", "watch", "create", "delete"}
    (binding,) = by_kind("ClusterRoleBinding")
    (account,) = by_kind("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "weft-system"}]


def test_the_daemonset_runs_the_agent_in_cluster_as_the_node_with_what_bcc_needs():
    (ds,) = by_kind("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (agent,) = spec["containers"]
    assert spec["hostNetwork"] and spec["serviceAccountName"] == by_kind("ServiceAccount")[0]["metadata"]["name"]
    assert "--in-cluster" in agent["args"][0] and "$NODE_NAME" in agent["args"][0]
    assert agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    security = agent["securityContext"]
    assert security["privileged"] is False and {"BPF", "NET_ADMIN"} <= set(security["capabilities"]["add"])
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert {"/sys/fs/bpf", "/lib/modules", "/usr/src"} <= mounts
    assert agent["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["ports"][0]["containerPort"] == 9962


def test_the_agent_balances_pods_connections_at_the_hosts_cgroup_root():
    (ds,) = by_kind("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (agent,) = spec["containers"]
    (config,) = by_kind("ConfigMap")
    flags = dict(line.strip().split("=", 1) for line in config["data"]["flags"].splitlines() if "=" in line)
    mounted = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    volume = next(v for v in spec["volumes"] if v["name"] == mounted[flags["--socket-lb-cgroup"]])
    assert volume["hostPath"]["path"] == "/sys/fs/cgroup"


def test_the_identity_crd_is_the_cluster_scoped_resource_the_agent_writes():
    (crd,) = by_kind("CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{identities.PLURAL}.{identities.GROUP}"
    assert (spec["group"], spec["scope"], spec["names"]["plural"], spec["names"]["kind"]) == \
        (identities.GROUP, "Cluster", identities.PLURAL, identities.KIND)
    (version,) = spec["versions"]
    assert version["name"] == identities.VERSION and version["served"] and version["storage"]
    labels = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["labels"]
    assert labels["type"] == "array" and labels["items"]["type"] == "string"
