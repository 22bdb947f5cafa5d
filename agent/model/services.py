"""Services as the datapath needs them: frontend (VIP, port, protocol) -> backends.

Pure Python over the cluster model. Backends come from the Service's selector
and the pods it matches, with named targetPorts resolved on each pod. As in
kube-proxy, terminating pods take no new connections unless no ready pod is
left, in which case the serving terminating ones do.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..sources.objects import ObjectKey
from .cluster import Cluster, Pod

ALGORITHM_ANNOTATION = "weft.io/lb-algorithm"
ALGORITHMS = ("random", "maglev")
DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for sessionAffinity: ClientIP


@dataclass(frozen=True, order=True)
class Frontend:
    ip: str
    port: int
    protocol: str  # "TCP" or "UDP"

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}/{self.protocol}"


@dataclass(frozen=True, order=True)
class Backend:
    ip: str
    port: int
    protocol: str

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


def _selects(selector: dict[str, str], pod: Pod) -> bool:
    labels = pod.label_dict
    return all(labels.get(k) == v for k, v in selector.items())


def _target_port(pod: Pod, target, protocol: str) -> int | None:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for cp in pod.ports:
        if cp.name == target and cp.protocol == protocol:
            return cp.port
    return None  # this pod does not serve that named port


def service_frontends(key: ObjectKey, obj: dict, cluster: Cluster,
                      default_algorithm: str = "random") -> list[ServiceFrontend]:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    ips = [spec.get("clusterIP")] + list(spec.get("externalIPs") or []) + [
        i.get("ip") for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
    ips = [ip for ip in ips if ip and ip != "None"]
    selector = spec.get("selector") or {}
    pods = [p for p in cluster.pods.values()
            if p.namespace == key.namespace and selector and _selects(selector, p) and p.running]
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    algorithm = (meta.get("annotations") or {}).get(ALGORITHM_ANNOTATION, default_algorithm)
    if algorithm not in ALGORITHMS:
        algorithm = default_algorithm
    out = []
    for port in spec.get("ports") or []:
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            continue
        protocol = port.get("protocol") or "TCP"
        if protocol not in ("TCP", "UDP"):
            continue
        target = port.get("targetPort", port["port"])
        ready, terminating = set(), set()
        for pod in pods:
            number = _target_port(pod, target, protocol)
            if not number:
                continue
            if pod.terminating:
                terminating.add(Backend(pod.ip, number, protocol))
            elif pod.ready:
                ready.add(Backend(pod.ip, number, protocol))
        backends = tuple(sorted(ready or terminating))
        for ip in ips:
            out.append(ServiceFrontend(key.namespace, key.name, port.get("name") or "",
                                       Frontend(ip, port["port"], protocol), backends, affinity, algorithm))
    return out


def plan(cluster: Cluster, default_algorithm: str = "random") -> dict[Frontend, ServiceFrontend]:
    """Every frontend of every Service in the model."""
    frontends: dict[Frontend, ServiceFrontend] = {}
    for key, obj in sorted(cluster.objects.items()):
        if key.kind == "Service":
            for sf in service_frontends(key, obj, cluster, default_algorithm):
                frontends.setdefault(sf.frontend, sf)
    return frontends
