"""NetworkPolicy objects read into plain values, validated as the API server would.

Defaults are applied here, once: policyTypes (Ingress, plus Egress when there
are egress rules), protocol TCP. A policy the API server would reject is
rejected with a message naming it and the field, and is not enforced (it could
not exist in a real cluster either).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .selectors import Selector, SelectorError, parse_selector

PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}


class PolicyError(ValueError):
    pass


@dataclass(frozen=True)
class PortSpec:
    proto: int                   # IPPROTO_*
    port: int | str | None       # a number, a container port name, or None: every port
    end_port: int | None = None  # with a numeric port: the inclusive range port..end_port


@dataclass(frozen=True)
class PodPeer:
    """Pods selected by labels; namespaces None means the policy's own namespace."""

    namespaces: Selector | None
    pods: Selector


@dataclass(frozen=True)
class IPBlock:
    cidr: ipaddress.IPv4Network
    excepts: tuple[ipaddress.IPv4Network, ...] = ()


@dataclass(frozen=True)
class Rule:
    peers: tuple[PodPeer | IPBlock, ...] | None  # None: any peer
    ports: tuple[PortSpec, ...] | None           # None: any protocol and port


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: Selector
    ingress: tuple[Rule, ...] | None  # None: does not isolate ingress
    egress: tuple[Rule, ...] | None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


def _port(spec, at: str) -> PortSpec:
    if not isinstance(spec, dict):
        raise PolicyError(f"{at}: must be a mapping")
    protocol = spec.get("protocol", "TCP")
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{at}.protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    port, end_port = spec.get("port"), spec.get("endPort")
    if isinstance(port, bool) or not (port is None or isinstance(port, (int, str))):
        raise PolicyError(f"{at}.port: must be a number or a port name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise PolicyError(f"{at}.port: {port} is not between 1 and 65535")
    if isinstance(port, str) and not port:
        raise PolicyError(f"{at}.port: an empty port name")
    if end_port is not None:
        if not isinstance(port, int):
            raise PolicyError(f"{at}.endPort: needs a numeric port")
        if isinstance(end_port, bool) or not isinstance(end_port, int) or not port <= end_port <= 65535:
            raise PolicyError(f"{at}.endPort: must be a number from port ({port}) to 65535")
    return PortSpec(PROTOCOLS[protocol], port, end_port)


def _network(text, at: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except (TypeError, ValueError):
        raise PolicyError(f"{at}: {text!r} is not a CIDR") from None


def _peer(spec, at: str) -> PodPeer | IPBlock | None:
    """A peer; None for an IPv6 block, which no IPv4 packet can match."""
    if not isinstance(spec, dict):
        raise PolicyError(f"{at}: must be a mapping")
    if "ipBlock" in spec:
        if "podSelector" in spec or "namespaceSelector" in spec:
            raise PolicyError(f"{at}: ipBlock cannot be combined with a selector")
        block = spec["ipBlock"] or {}
        cidr = _network(block.get("cidr"), f"{at}.ipBlock.cidr")
        excepts = tuple(_network(e, f"{at}.ipBlock.except[{i}]") for i, e in enumerate(block.get("except") or []))
        for e in excepts:
            if e.version != cidr.version or not e.subnet_of(cidr) or e == cidr:
                raise PolicyError(f"{at}.ipBlock.except: {e} is not inside {cidr}")
        return IPBlock(cidr, excepts) if cidr.version == 4 else None
    if "podSelector" not in spec and "namespaceSelector" not in spec:
        raise PolicyError(f"{at}: a peer needs podSelector, namespaceSelector or ipBlock")
    namespaces = (parse_selector(spec["namespaceSelector"], f"{at}.namespaceSelector")
                  if "namespaceSelector" in spec else None)
    return PodPeer(namespaces, parse_selector(spec.get("podSelector"), f"{at}.podSelector"))


def _rules(specs, field: str, peers_field: str) -> tuple[Rule, ...]:
    if not isinstance(specs, list):
        raise PolicyError(f"spec.{field}: must be a list of rules")
    rules = []
    for i, spec in enumerate(specs):
        at = f"spec.{field}[{i}]"
        if not isinstance(spec, dict):
            raise PolicyError(f"{at}: must be a mapping")
        peers = ports = None
        if spec.get(peers_field):
            if not isinstance(spec[peers_field], list):
                raise PolicyError(f"{at}.{peers_field}: must be a list")
            parsed = [_peer(p, f"{at}.{peers_field}[{j}]") for j, p in enumerate(spec[peers_field])]
            peers = tuple(p for p in parsed if p is not None)
        if spec.get("ports"):
            if not isinstance(spec["ports"], list):
                raise PolicyError(f"{at}.ports: must be a list")
            ports = tuple(_port(p, f"{at}.ports[{j}]") for j, p in enumerate(spec["ports"]))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def parse_policy(obj: dict) -> NetworkPolicy:
    meta = obj["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        spec = obj.get("spec") or {}
        pod_selector = parse_selector(spec.get("podSelector") or {}, "spec.podSelector")
        types = spec.get("policyTypes")
        if types is None:
            types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
        if not isinstance(types, list) or any(t not in ("Ingress", "Egress") for t in types):
            raise PolicyError(f"spec.policyTypes: {types!r} must list Ingress and/or Egress")
        ingress = _rules(spec.get("ingress") or [], "ingress", "from") if "Ingress" in types else None
        egress = _rules(spec.get("egress") or [], "egress", "to") if "Egress" in types else None
    except (PolicyError, SelectorError) as exc:
        raise PolicyError(f"NetworkPolicy {namespace}/{name}: {exc}") from None
    return NetworkPolicy(namespace, name, pod_selector, ingress, egress)
