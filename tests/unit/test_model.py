from __future__ import annotations

from agent.model.cluster import Cluster, ContainerPort, Workload
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey


def pod_event(name, node="n1", ip="10.244.1.2", phase="Running", type_=EventType.ADDED, **meta):
    obj = {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "x", "labels": {"app": name}, **meta},
        "spec": {"nodeName": node, "containers": [{"ports": [
            {"containerPort": 80, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]}]},
        "status": {"podIP": ip, "phase": phase},
    }
    return Event(type_, ObjectKey("Pod", "x", name), obj)


def test_local_endpoints_are_running_pods_of_this_node():
    c = Cluster("n1")
    c.apply_all([pod_event("a"), pod_event("b", node="n2", ip="10.244.2.2"),
                 pod_event("pending", ip="", phase="Pending"), pod_event("c", ip="10.244.1.3")])
    assert sorted(c.local_endpoints()) == ["x/a", "x/c"]
    a = c.local_endpoints()["x/a"]
    assert a.ports == (ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", ""))
    assert a.label_dict == {"app": "a"}


def test_ip_cache_follows_changes_and_deletes():
    c = Cluster("n1")
    c.apply(pod_event("a"))
    assert c.pod_by_ip("10.244.1.2").name == "a"
    c.apply(pod_event("a", ip="10.244.1.9", type_=EventType.MODIFIED))
    assert c.pod_by_ip("10.244.1.2") is None and c.pod_by_ip("10.244.1.9").name == "a"
    c.apply(pod_event("a", ip="10.244.1.9", type_=EventType.DELETED))
    assert c.pod_by_ip("10.244.1.9") is None and c.pods == {}


def test_invalid_pod_ip_is_not_an_endpoint():
    c = Cluster("n1")
    c.apply(pod_event("a", ip="10.244.1.300"))
    assert c.local_endpoints() == {} and c.pod_by_ip("10.244.1.300") is None


def test_workload_from_replicaset_owner():
    c = Cluster("n1")
    c.apply(pod_event("web-abc-xyz", ownerReferences=[{"kind": "ReplicaSet", "name": "web-abc"}]))
    assert c.pods["x/web-abc-xyz"].workload == Workload("Deployment", "web")


def test_namespaces_and_nodes():
    c = Cluster("n1")
    c.apply(Event(EventType.ADDED, ObjectKey("Namespace", "", "x"),
                  {"kind": "Namespace", "metadata": {"name": "x", "labels": {"team": "a"}}}))
    c.apply(Event(EventType.ADDED, ObjectKey("Node", "", "n1"), {
        "kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.11"}]}}))
    assert c.namespaces == {"x": {"team": "a"}}
    assert c.nodes["n1"].internal_ip == "172.18.0.11" and c.nodes["n1"].pod_cidr == "10.244.1.0/24"


def test_canonical_ipv4():
    from agent.model.cluster import canonical_ipv4

    assert canonical_ipv4("10.244.1.2") == "10.244.1.2"
    for bad in ("10.1", "10.244.1.300", "010.1.1.1", " 10.1.1.1", "::1", "", None, 7, "a.b.c.d"):
        assert canonical_ipv4(bad) == "", bad
