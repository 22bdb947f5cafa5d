from __future__ import annotations

from collections import Counter

import pytest

from agent.model import maglev
from agent.model.cluster import Cluster
from agent.model.services import Backend, Frontend, plan
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey


def pod(name, ip, labels, ports=(("http", 8080, "TCP"),), ns="x", ready=True, deleting=False, phase="Running"):
    meta = {"name": name, "namespace": ns, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-22T10:00:00Z"
    return Event(EventType.ADDED, ObjectKey("Pod", ns, name), {
        "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": "n1", "containers": [{"ports": [
            {"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]}]},
        "status": {"podIP": ip, "phase": phase,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}})


def service(name, spec, ns="x", annotations=None):
    meta = {"name": name, "namespace": ns, **({"annotations": annotations} if annotations else {})}
    return Event(EventType.ADDED, ObjectKey("Service", ns, name), {"kind": "Service", "metadata": meta, "spec": spec})


def cluster(*events):
    c = Cluster("n1")
    c.apply_all(list(events))
    return c


WEB = {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
       "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}


def test_clusterip_selects_ready_pods_and_resolves_named_ports_per_pod():
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}),
                pod("b", "10.244.1.3", {"app": "web"}, ports=(("http", 9090, "TCP"),)),
                pod("c", "10.244.1.4", {"app": "web"}, ports=(("other", 8080, "TCP"),)),  # no "http"
                pod("d", "10.244.1.5", {"app": "db"}),
                pod("e", "10.244.1.6", {"app": "web"}, ns="y"),
                service("web", WEB))
    p = plan(c)
    assert list(p) == [Frontend("10.96.0.10", 80, "TCP")]
    sf = p[Frontend("10.96.0.10", 80, "TCP")]
    assert sf.backends == (Backend("10.244.1.2", 8080, "TCP", local=True), Backend("10.244.1.3", 9090, "TCP", True))
    assert (sf.namespace, sf.name, sf.port_name) == ("x", "web", "http")


def test_several_ports_protocols_and_external_ips():
    spec = {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.7"],
            "ports": [{"port": 80, "targetPort": 8080}, {"name": "dns", "port": 53, "protocol": "UDP",
                                                         "targetPort": "dns"}]}
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}, ports=(("http", 8080, "TCP"), ("dns", 5353, "UDP"))),
                service("web", spec))
    p = plan(c)
    assert set(p) == {Frontend("10.96.0.10", 80, "TCP"), Frontend("10.96.0.10", 53, "UDP"),
                      Frontend("192.0.2.7", 80, "TCP"), Frontend("192.0.2.7", 53, "UDP"),
                      Frontend("192.0.2.7", 80, "TCP", "external"), Frontend("192.0.2.7", 53, "UDP", "external")}
    assert p[Frontend("10.96.0.10", 53, "UDP")].backends == (Backend("10.244.1.2", 5353, "UDP", True),)


def test_named_port_must_match_protocol():
    spec = {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
            "ports": [{"port": 53, "protocol": "UDP", "targetPort": "dns"}]}
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}, ports=(("dns", 53, "TCP"),)), service("s", spec))
    assert plan(c)[Frontend("10.96.0.10", 53, "UDP")].backends == ()


def test_unready_pods_are_not_backends_terminating_only_as_a_last_resort():
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}), pod("b", "10.244.1.3", {"app": "web"}, ready=False),
                pod("t", "10.244.1.4", {"app": "web"}, deleting=True), service("web", WEB))
    fe = Frontend("10.96.0.10", 80, "TCP")
    assert [b.ip for b in plan(c)[fe].backends] == ["10.244.1.2"]
    c.apply(Event(EventType.DELETED, ObjectKey("Pod", "x", "a"), {}))
    assert [b.ip for b in plan(c)[fe].backends] == ["10.244.1.4"], "terminating serves when nothing else does"


def test_no_selector_headless_and_no_endpoints():
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}),
                service("manual", {"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}),
                service("headless", {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
                service("empty", {"clusterIP": "10.96.0.12", "selector": {"app": "none"}, "ports": [{"port": 80}]}))
    p = plan(c)
    assert set(p) == {Frontend("10.96.0.11", 80, "TCP"), Frontend("10.96.0.12", 80, "TCP")}
    assert all(sf.backends == () for sf in p.values())


def test_affinity_and_algorithm():
    spec = {**WEB, "sessionAffinity": "ClientIP"}
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}), service("web", spec),
                service("mag", {**WEB, "clusterIP": "10.96.0.20"}, annotations={"weft.io/lb-algorithm": "maglev"}),
                service("cfg", {**WEB, "clusterIP": "10.96.0.30", "sessionAffinity": "ClientIP",
                                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}))
    p = plan(c)
    assert p[Frontend("10.96.0.10", 80, "TCP")].affinity_timeout == 10800
    assert p[Frontend("10.96.0.30", 80, "TCP")].affinity_timeout == 5
    assert p[Frontend("10.96.0.20", 80, "TCP")].algorithm == "maglev"
    assert p[Frontend("10.96.0.10", 80, "TCP")].algorithm == "random"
    assert plan(c, "maglev")[Frontend("10.96.0.10", 80, "TCP")].algorithm == "maglev"


def names(n):
    return [f"10.244.{i // 200}.{i % 200 + 2}:8080/TCP" for i in range(n)]


@pytest.mark.parametrize("n", [1, 3, 4, 10])
def test_maglev_table_is_full_and_balanced(n):
    table = maglev.build_table(names(n), 1021)
    counts = Counter(table)
    assert len(table) == 1021 and set(counts) == set(range(n))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_maglev_removing_a_backend_moves_little_else():
    before = maglev.build_table(names(10), 1021)
    after_names = names(10)[:3] + names(10)[4:]  # backend 3 goes
    after = maglev.build_table(after_names, 1021)
    old = [names(10)[b] for b in before]
    new = [after_names[b] for b in after]
    moved_elsewhere = sum(1 for o, n in zip(old, new) if o != n and o != names(10)[3])
    # slots of the removed backend (~1/10) must move; of the others, Maglev promises few
    assert moved_elsewhere / 1021 < 0.06


def test_maglev_is_the_same_on_every_node_and_needs_a_prime():
    assert maglev.build_table(names(4), 251) == maglev.build_table(names(4), 251)
    with pytest.raises(ValueError, match="prime"):
        maglev.build_table(names(4), 1000)
    assert maglev.build_table([], 251) == []


def test_incremental_planner_always_equals_a_full_plan():
    import random

    from agent.model.services import ServicePlanner

    rng = random.Random(7)
    c, planner = Cluster("n1"), ServicePlanner()
    apps = ["web", "db", "cache"]
    for step in range(2000):
        choice = rng.random()
        if choice < 0.5:
            i = rng.randrange(12)
            ev = pod(f"p{i}", f"10.244.1.{i + 2}", {"app": rng.choice(apps)}, ns=rng.choice(["x", "y"]),
                     ready=rng.random() > 0.2, deleting=rng.random() < 0.1)
            if rng.random() < 0.2:
                ev = Event(EventType.DELETED, ev.key, ev.obj)
        elif choice < 0.7:
            i = rng.randrange(6)
            ev = endpoint_slice(f"sl{i}", f"s{rng.randrange(5)}",
                                [{"addresses": [f"10.244.2.{j + 2}"], "conditions": {"ready": rng.random() > 0.3}}
                                 for j in range(rng.randrange(3))], ns=rng.choice(["x", "y"]))
            if rng.random() < 0.3:
                ev = Event(EventType.DELETED, ev.key, ev.obj)
        else:
            i = rng.randrange(5)
            spec = {"selector": {"app": rng.choice(apps)}, "clusterIP": f"10.96.0.{i + 10}",
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
            ev = service(f"s{i}", spec, ns=rng.choice(["x", "y"]))
            if rng.random() < 0.2:
                ev = Event(EventType.DELETED, ev.key, ev.obj)
        c.apply(ev)
        changes = planner.update(c, [ev])
        assert planner.plan == plan(c), f"diverged at step {step}"
        for fe, sf in changes.items():
            assert planner.plan.get(fe) == sf


def endpoint_slice(name, service_name, endpoints, ports=(("http", 8080, "TCP"),), ns="x", address_type="IPv4"):
    return Event(EventType.ADDED, ObjectKey("EndpointSlice", ns, name), {
        "kind": "EndpointSlice", "addressType": address_type,
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service_name}},
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
        "endpoints": endpoints})


def test_endpoint_slices_are_the_backends_when_a_service_has_them():
    c = cluster(pod("a", "10.244.1.2", {"app": "web"}),  # selected, but the slices win
                service("web", WEB),
                endpoint_slice("web-abc", "web", [
                    {"addresses": ["10.244.2.7"], "nodeName": "n1"},  # no conditions: ready
                    {"addresses": ["10.244.2.8"], "nodeName": "n2", "conditions": {"ready": True}},
                    {"addresses": ["10.244.2.9"], "conditions": {"ready": False}},
                    {"addresses": ["10.244.2.10"], "conditions": {"ready": False, "serving": True, "terminating": True}},
                ]),
                endpoint_slice("web-def", "web", [{"addresses": ["10.244.3.1"]}], ports=(("http", 9090, "TCP"),)),
                endpoint_slice("web-v6", "web", [{"addresses": ["fd00::1"]}], address_type="IPv6"),
                endpoint_slice("other", "db", [{"addresses": ["10.244.9.9"]}]))
    sf = plan(c)[Frontend("10.96.0.10", 80, "TCP")]
    assert sf.backends == (Backend("10.244.2.7", 8080, "TCP", local=True), Backend("10.244.2.8", 8080, "TCP"),
                           Backend("10.244.3.1", 9090, "TCP"))


def test_a_service_without_selector_uses_its_slices_terminating_ones_as_a_last_resort():
    spec = {"clusterIP": "10.96.0.20", "ports": [{"name": "", "port": 5432, "protocol": "TCP"}]}
    c = cluster(service("pg", spec),
                endpoint_slice("pg-1", "pg", [{"addresses": ["192.0.2.5"], "conditions": {
                    "ready": False, "serving": True, "terminating": True}},
                    {"addresses": ["192.0.2.6"], "conditions": {"ready": False, "serving": False, "terminating": True}}],
                    ports=(("", 5432, "TCP"),)))
    assert plan(c)[Frontend("10.96.0.20", 5432, "TCP")].backends == (Backend("192.0.2.5", 5432, "TCP"),)


def test_a_deleted_slice_gives_the_service_back_to_its_selector():
    from agent.model.services import ServicePlanner

    sl = endpoint_slice("web-abc", "web", [{"addresses": ["10.244.2.7"]}])
    c, planner = cluster(pod("a", "10.244.1.2", {"app": "web"}), service("web", WEB)), ServicePlanner()
    planner.update(c, [])
    for ev in (service("web", WEB), sl, Event(EventType.DELETED, sl.key, sl.obj)):
        c.apply(ev)
        planner.update(c, [ev])
        assert planner.plan == plan(c)
    assert planner.plan[Frontend("10.96.0.10", 80, "TCP")].backends == (Backend("10.244.1.2", 8080, "TCP", True),)


def node_event(name="n1", ip="172.18.0.11"):
    return Event(EventType.ADDED, ObjectKey("Node", "", name), {
        "kind": "Node", "metadata": {"name": name},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})


def remote_pod(name, ip, labels):
    ev = pod(name, ip, labels)
    ev.obj["spec"]["nodeName"] = "n2"
    return ev


NODEPORT = {**WEB, "type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}


def test_nodeport_on_this_nodes_ip_for_outside_traffic():
    c = cluster(node_event(), pod("a", "10.244.1.2", {"app": "web"}),
                remote_pod("b", "10.244.2.2", {"app": "web"}), service("web", NODEPORT))
    p = plan(c)
    outside = p[Frontend("172.18.0.11", 30080, "TCP", "external")]
    assert [(b.ip, b.local) for b in outside.backends] == [("10.244.1.2", True), ("10.244.2.2", False)]
    assert Frontend("10.96.0.10", 80, "TCP") in p  # and the ClusterIP for pods
    assert Frontend("172.18.0.11", 30080, "TCP") not in p  # NodePorts are not for pods here


def test_external_traffic_policy_local_keeps_outside_traffic_here_with_a_health_check():
    spec = {**NODEPORT, "type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000}
    c = cluster(node_event(), pod("a", "10.244.1.2", {"app": "web"}),
                remote_pod("b", "10.244.2.2", {"app": "web"}), service("web", spec))
    p = plan(c)
    outside = p[Frontend("172.18.0.11", 30080, "TCP", "external")]
    assert [b.ip for b in outside.backends] == ["10.244.1.2"] and outside.health_check_port == 32000
    assert len(p[Frontend("10.96.0.10", 80, "TCP")].backends) == 2  # pods still reach all


def test_internal_traffic_policy_local():
    c = cluster(node_event(), remote_pod("b", "10.244.2.2", {"app": "web"}),
                service("web", {**WEB, "internalTrafficPolicy": "Local"}))
    assert plan(c)[Frontend("10.96.0.10", 80, "TCP")].backends == ()


def test_node_ip_arriving_later_replans_node_ports():
    from agent.model.services import ServicePlanner

    c, planner = Cluster("n1"), ServicePlanner()
    events = [pod("a", "10.244.1.2", {"app": "web"}), service("web", NODEPORT)]
    c.apply_all(events)
    planner.update(c, events)
    assert not any(fe.scope == "external" for fe in planner.plan)
    c.apply(node_event())
    changes = planner.update(c, [node_event()])
    assert Frontend("172.18.0.11", 30080, "TCP", "external") in changes
    assert planner.plan == plan(c)
