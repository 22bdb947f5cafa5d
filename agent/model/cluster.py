"""The desired state of the cluster as this node needs it: pure Python, no kernel.

The model consumes source events and answers the questions the datapath and
the flow decoder ask: which pods live on this node (its endpoints), and who
owns an IP address.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

from ..sources.events import Event, EventType
from .bulk import gc_paused_for
from ..sources.objects import ObjectKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Workload:
    kind: str
    name: str


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str = ""
    ip: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    phase: str = "Pending"
    workload: Workload | None = None
    terminating: bool = False  # metadata.deletionTimestamp is set
    ready: bool = True         # the Ready condition, when the pod reports one

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def running(self) -> bool:
        return self.phase == "Running" and bool(self.ip)


@dataclass(frozen=True)
class Node:
    name: str
    internal_ip: str = ""
    pod_cidr: str = ""


def _workload(meta: dict) -> Workload | None:
    for owner in meta.get("ownerReferences") or []:
        kind, name = owner.get("kind"), owner.get("name", "")
        if kind == "ReplicaSet" and "-" in name:
            return Workload("Deployment", name.rsplit("-", 1)[0])
        if kind:
            return Workload(kind, name)
    return None


def canonical_ipv4(value) -> str:
    """`value` if it is an IPv4 address in dotted-quad form, else "".

    inet_aton also takes forms like "10.1"; requiring the round trip to give the
    same text keeps exactly the canonical ones, at C speed."""
    if not isinstance(value, str) or value.count(".") != 3:
        return ""
    try:
        return value if socket.inet_ntoa(socket.inet_aton(value)) == value else ""
    except OSError:
        return ""



def pod_from_object(obj: dict) -> Pod:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    ports = []
    for container in spec.get("containers") or []:
        for p in container.get("ports") or []:
            if isinstance(p, dict) and isinstance(p.get("containerPort"), int):
                ports.append(ContainerPort(p["containerPort"], p.get("protocol", "TCP"), p.get("name", "")))
    return Pod(
        namespace=meta["namespace"],
        name=meta["name"],
        node=spec.get("nodeName") or "",
        ip=canonical_ipv4(status.get("podIP")),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        ports=tuple(ports),
        phase=status.get("phase") or "Pending",
        workload=_workload(meta),
        terminating=bool(meta.get("deletionTimestamp")),
        ready=all(c.get("status") == "True" for c in status.get("conditions") or []
                  if isinstance(c, dict) and c.get("type") == "Ready"),
    )


def node_from_object(obj: dict) -> Node:
    status, spec = obj.get("status") or {}, obj.get("spec") or {}
    ip = ""
    for addr in status.get("addresses") or []:
        if addr.get("type") == "InternalIP":
            ip = canonical_ipv4(addr.get("address"))
    return Node(obj["metadata"]["name"], ip, spec.get("podCIDR") or "")


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def slice_service(obj: dict) -> str:
    """The Service an EndpointSlice belongs to, "" when it names none."""
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) or "")


@dataclass
class Cluster:
    """Cluster state built from events; this node's view of it."""

    node_name: str
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> labels
    namespace_annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    objects: dict[ObjectKey, dict] = field(default_factory=dict)
    _by_ip: dict[str, Pod] = field(default_factory=dict)
    # (namespace, label key, label value) -> keys of the pods carrying it
    _by_label: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    # (namespace, Service name) -> its EndpointSlices by name
    _slices: dict[tuple[str, str], dict[str, dict]] = field(default_factory=dict)
    _slice_owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (namespace, slice) -> Service

    def apply(self, event: Event) -> None:
        key, obj = event.key, event.obj
        if event.type is EventType.DELETED:
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        handler = getattr(self, f"_apply_{key.kind.lower()}", None)
        if handler:
            handler(event)

    def apply_all(self, events: list[Event]) -> None:
        with gc_paused_for(len(events)):
            for event in events:
                self.apply(event)

    def _apply_namespace(self, event: Event) -> None:
        name = event.key.name
        if event.type is EventType.DELETED:
            self.namespaces.pop(name, None)
            self.namespace_annotations.pop(name, None)
        else:
            self.namespaces[name] = dict(event.obj["metadata"].get("labels") or {})
            self.namespace_annotations[name] = dict(event.obj["metadata"].get("annotations") or {})

    def _apply_pod(self, event: Event) -> None:
        key = f"{event.key.namespace}/{event.key.name}"
        old = self.pods.pop(key, None)
        if old:
            if old.ip and self._by_ip.get(old.ip) is old:
                del self._by_ip[old.ip]
            for k, v in old.labels:
                self._by_label[(old.namespace, k, v)].discard(key)
        if event.type is EventType.DELETED:
            return
        pod = pod_from_object(event.obj)
        self.pods[key] = pod
        if pod.ip:
            self._by_ip[pod.ip] = pod
        for k, v in pod.labels:
            self._by_label.setdefault((pod.namespace, k, v), set()).add(key)

    def _apply_node(self, event: Event) -> None:
        if event.type is EventType.DELETED:
            self.nodes.pop(event.key.name, None)
        else:
            self.nodes[event.key.name] = node_from_object(event.obj)

    def _apply_endpointslice(self, event: Event) -> None:
        ns, name = event.key.namespace, event.key.name
        before = self._slice_owner.pop((ns, name), None)  # it may have changed Service
        if before:
            slices = self._slices[(ns, before)]
            slices.pop(name, None)
            if not slices:
                del self._slices[(ns, before)]
        service = slice_service(event.obj)
        if event.type is not EventType.DELETED and service:
            self._slices.setdefault((ns, service), {})[name] = event.obj
            self._slice_owner[(ns, name)] = service

    def endpoint_slices(self, namespace: str, service: str) -> list[dict]:
        """The EndpointSlices of a Service (label kubernetes.io/service-name), by name."""
        return [obj for _, obj in sorted(self._slices.get((namespace, service), {}).items())]

    def local_endpoints(self) -> dict[str, Pod]:
        """Running pods scheduled on this node, with an IP: what the datapath serves."""
        return {k: p for k, p in self.pods.items() if p.node == self.node_name and p.running}

    def select_pods(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        """Pods of `namespace` carrying every label of a non-empty equality selector."""
        if not selector:
            return []
        sets = [self._by_label.get((namespace, k, v), set()) for k, v in selector.items()]
        keys = set.intersection(*sorted(sets, key=len))
        return [self.pods[k] for k in sorted(keys)]

    def pod_by_ip(self, ip: str) -> Pod | None:
        return self._by_ip.get(ip)
