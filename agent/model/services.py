"""Services as the datapath needs them: frontend (VIP, port, protocol) -> backends.

Pure Python over the cluster model. Backends come from the Service's
EndpointSlices when it has any (the Kubernetes API: the endpoint controller's
view, or endpoints the operator manages for a Service without a selector);
otherwise from the Service's selector and the pods it matches, with named
targetPorts resolved on each pod. As in kube-proxy, terminating endpoints take
no new connections unless no ready one is left, in which case the serving
terminating ones do.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from ..sources.objects import ObjectKey
from .bulk import gc_paused_for
from .cluster import Cluster, Pod, canonical_ipv4, slice_service

ALGORITHM_ANNOTATION = "weft.io/lb-algorithm"
ALGORITHMS = ("random", "maglev")
DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for sessionAffinity: ClientIP


PODS, EXTERNAL = "pods", "external"  # who a frontend serves


class Frontend(NamedTuple):  # NamedTuple: hashed in C, and the plan hashes many
    ip: str
    port: int
    protocol: str  # "TCP" or "UDP"
    scope: str = PODS  # PODS: traffic from pods; EXTERNAL: from outside, on the uplink

    def __str__(self) -> str:
        where = "" if self.scope == PODS else " (external)"
        return f"{self.ip}:{self.port}/{self.protocol}{where}"


class Backend(NamedTuple):
    ip: str
    port: int
    protocol: str
    local: bool = False  # a pod on this node

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol}"


@dataclass(frozen=True)
class ServiceFrontend:
    namespace: str
    name: str
    port_name: str
    frontend: Frontend
    backends: tuple[Backend, ...]  # those taking new connections, sorted
    affinity_timeout: int = 0      # seconds; 0 = no session affinity
    algorithm: str = "random"
    health_check_port: int = 0     # eTP=Local: answer how many local backends there are


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _target_port(pod: Pod, target, protocol: str) -> int | None:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for cp in pod.ports:
        if cp.name == target and cp.protocol == protocol:
            return cp.port
    return None  # this pod does not serve that named port


def _pod_backends(pods: list[Pod], target, protocol: str, node_name: str) -> tuple[set, set]:
    """(ready, serving-but-terminating) backends of a Service port among its pods."""
    ready, terminating = set(), set()
    for pod in pods:
        number = _target_port(pod, target, protocol)
        if not number:
            continue
        backend = Backend(pod.ip, number, protocol, pod.node == node_name)
        if pod.terminating:
            terminating.add(backend)
        elif pod.ready:
            ready.add(backend)
    return ready, terminating


def _slice_backends(slices: list[dict], port_name: str, protocol: str, node_name: str) -> tuple[set, set]:
    """(ready, serving-but-terminating) backends of a Service port from its EndpointSlices.

    A slice port matches the Service port by name and protocol; conditions left
    out mean ready and serving, as the API documents."""
    ready, terminating = set(), set()
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        number = next((p.get("port") for p in sl.get("ports") or [] if isinstance(p, dict)
                       and (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol), None)
        if not isinstance(number, int) or not 0 < number < 65536:
            continue
        for ep in sl.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            ip = next((canonical_ipv4(a) for a in ep.get("addresses") or [] if canonical_ipv4(a)), "")
            if not ip:
                continue
            cond = ep.get("conditions") or {}
            is_ready = cond.get("ready") is not False
            backend = Backend(ip, number, protocol, ep.get("nodeName") == node_name)
            if cond.get("terminating"):
                if cond.get("serving", is_ready) is not False:
                    terminating.add(backend)
            elif is_ready:
                ready.add(backend)
    return ready, terminating


def service_frontends(key: ObjectKey, obj: dict, cluster: Cluster,
                      default_algorithm: str = "random") -> list[ServiceFrontend]:
    """The frontends of one Service as this node serves them.

    Pods reach the ClusterIP and external IPs (internalTrafficPolicy: Local
    keeps them to this node's backends); clients outside reach the NodePorts on
    this node's IP and the external IPs (externalTrafficPolicy: Local keeps
    them to this node's backends, with the client's address intact)."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    cluster_ips = [ip for ip in [spec.get("clusterIP")] if canonical_ipv4(ip)]
    external_ips = [ip for ip in list(spec.get("externalIPs") or []) + [
        i.get("ip") for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if isinstance(i, dict)] if canonical_ipv4(ip)]
    node = cluster.nodes.get(cluster.node_name)
    node_ip = node.internal_ip if node else ""
    slices = cluster.endpoint_slices(key.namespace, key.name)
    pods = [] if slices else [p for p in cluster.select_pods(key.namespace, spec.get("selector") or {})
                              if p.running]
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    algorithm = (meta.get("annotations") or {}).get(ALGORITHM_ANNOTATION, default_algorithm)
    if algorithm not in ALGORITHMS:
        algorithm = default_algorithm
    internal_local = spec.get("internalTrafficPolicy") == "Local"
    external_local = spec.get("externalTrafficPolicy") == "Local"
    has_node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    health_port = spec.get("healthCheckNodePort") if external_local and isinstance(
        spec.get("healthCheckNodePort"), int) else 0
    out = []
    for port in spec.get("ports") or []:
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            continue
        protocol = port.get("protocol") or "TCP"
        if protocol not in ("TCP", "UDP"):
            continue
        if slices:
            ready, terminating = _slice_backends(slices, port.get("name") or "", protocol, cluster.node_name)
        else:
            ready, terminating = _pod_backends(pods, port.get("targetPort", port["port"]), protocol,
                                               cluster.node_name)
        every = tuple(sorted(ready or terminating))
        local = tuple(b for b in every if b.local)

        def frontend(ip, number, scope, backends, health=0):
            out.append(ServiceFrontend(key.namespace, key.name, port.get("name") or "",
                                       Frontend(ip, number, protocol, scope), backends, affinity,
                                       algorithm, health))

        for ip in cluster_ips + external_ips:
            frontend(ip, port["port"], PODS, local if internal_local and ip in cluster_ips else every)
        outside = local if external_local else every
        for ip in external_ips:
            frontend(ip, port["port"], EXTERNAL, outside, health_port)
        if has_node_ports and node_ip and isinstance(port.get("nodePort"), int):
            frontend(node_ip, port["nodePort"], EXTERNAL, outside, health_port)
    return out


def plan(cluster: Cluster, default_algorithm: str = "random") -> dict[Frontend, ServiceFrontend]:
    """Every frontend of every Service in the model."""
    frontends: dict[Frontend, ServiceFrontend] = {}
    for key, obj in sorted(cluster.objects.items()):
        if key.kind == "Service":
            for sf in service_frontends(key, obj, cluster, default_algorithm):
                frontends.setdefault(sf.frontend, sf)
    return frontends


class ServicePlanner:
    """The plan, kept up to date incrementally: an event recomputes only the
    Services it can touch (the Service itself; for a pod, the Services of its
    namespace that select it before or after the change)."""

    def __init__(self, default_algorithm: str = "random"):
        self.default_algorithm = default_algorithm
        self.plan: dict[Frontend, ServiceFrontend] = {}
        self.scope_counts: Counter[str] = Counter()  # frontends in the plan per scope, for metrics
        self._computed: dict[ObjectKey, dict[Frontend, ServiceFrontend]] = {}
        self._claims: dict[Frontend, set[ObjectKey]] = {}
        self._selectors: dict[ObjectKey, dict[str, str]] = {}
        # (namespace, key, value) of one term of each selector -> Services: a pod can
        # only be selected by Services indexed under one of its own labels
        self._by_term: dict[tuple[str, str, str], set[ObjectKey]] = {}
        self._pod_labels: dict[str, dict[str, str]] = {}
        self._slice_owner: dict[ObjectKey, str] = {}  # EndpointSlice -> the Service it names

    def _dirty(self, cluster: Cluster, events) -> set[ObjectKey]:
        dirty: set[ObjectKey] = set()
        for event in events:
            key = event.key
            if key.kind == "Node" and key.name == cluster.node_name:
                dirty.update(self._computed)  # NodePort frontends live on the node's IP
            elif key.kind == "Service":
                dirty.add(key)
                self._index_selector(key, ((cluster.objects.get(key) or {}).get("spec") or {}).get("selector"))
            elif key.kind == "EndpointSlice":
                before = self._slice_owner.pop(key, "")
                after = "" if event.type.value == "DELETED" else slice_service(event.obj)
                if after:
                    self._slice_owner[key] = after
                dirty.update(ObjectKey("Service", key.namespace, name) for name in (before, after) if name)
            elif key.kind == "Pod":
                pod_key = f"{key.namespace}/{key.name}"
                before = self._pod_labels.pop(pod_key, {})
                after = {} if event.type.value == "DELETED" else \
                    dict((event.obj.get("metadata") or {}).get("labels") or {})
                if after:
                    self._pod_labels[pod_key] = after
                for labels in (before, after):
                    for k, v in labels.items():
                        for svc in self._by_term.get((key.namespace, k, v), ()):
                            if _selects(self._selectors[svc], labels):
                                dirty.add(svc)
        return dirty

    def _index_selector(self, key: ObjectKey, selector: dict | None) -> None:
        old = self._selectors.pop(key, None)
        if old:
            self._by_term[(key.namespace, *min(old.items()))].discard(key)
        if selector and isinstance(selector, dict):
            self._selectors[key] = selector
            self._by_term.setdefault((key.namespace, *min(selector.items())), set()).add(key)

    def update(self, cluster: Cluster, events) -> dict[Frontend, ServiceFrontend | None]:
        """Apply events (already applied to `cluster`); return the frontends that
        changed: their new state, or None for the ones that are gone.

        A frontend two Services claim (a shared external IP) belongs to the first
        in key order, as in plan(); when its owner lets go, the next one takes it."""
        with gc_paused_for(len(events)):
            return self._update(cluster, events)

    def _update(self, cluster: Cluster, events) -> dict[Frontend, ServiceFrontend | None]:
        touched: set[Frontend] = set()
        for key in self._dirty(cluster, events):
            for fe in self._computed.pop(key, {}):
                self._claims[fe].discard(key)
                touched.add(fe)
            obj = cluster.objects.get(key)
            if obj is None:
                continue
            computed = {sf.frontend: sf for sf in service_frontends(key, obj, cluster, self.default_algorithm)}
            self._computed[key] = computed
            for fe in computed:
                self._claims.setdefault(fe, set()).add(key)
                touched.add(fe)
        changes: dict[Frontend, ServiceFrontend | None] = {}
        for fe in sorted(touched):
            claimants = self._claims.get(fe)
            new = self._computed[min(claimants)][fe] if claimants else None
            if not claimants:
                self._claims.pop(fe, None)
            if self.plan.get(fe) != new:
                changes[fe] = new
                if new is None:
                    del self.plan[fe]
                    self.scope_counts[fe.scope] -= 1
                else:
                    self.scope_counts[fe.scope] += fe not in self.plan
                    self.plan[fe] = new
        return changes
