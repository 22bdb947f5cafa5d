"""Hubble's FlowFilter semantics: AND across the fields set, OR within a field.

A request's whitelist matches when any of its filters matches (or it is
empty); its blacklist excludes a flow when any of its filters matches.
"""
from __future__ import annotations

import fnmatch
import ipaddress

from ..api.flow import flow_pb2 as pb


def _ip_matches(ip: str, patterns) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    for pattern in patterns:
        if "/" in pattern:
            if addr in ipaddress.ip_network(pattern, strict=False):
                return True
        elif ip == pattern:
            return True
    return False


def _named_matches(namespace: str, name: str, patterns) -> bool:
    """Hubble's rule for pods and Services: "ns/prefix" matches names of ns that start
    with prefix, "ns/" a whole namespace, a bare prefix the default namespace."""
    if not name:
        return False
    for pattern in patterns:
        ns, _, prefix = pattern.rpartition("/")
        if namespace == (ns or "default") and name.startswith(prefix):
            return True
    return False


def _pod_matches(ep: pb.Endpoint, patterns) -> bool:
    return _named_matches(ep.namespace, ep.pod_name, patterns)


def _service_matches(svc: pb.Service, patterns) -> bool:
    return _named_matches(svc.namespace, svc.name, patterns)


def _workload_matches(ep: pb.Endpoint, wanted) -> bool:
    """Hubble's rule: a filter workload's empty kind or name matches any."""
    return any((not w.kind or w.kind == have.kind) and (not w.name or w.name == have.name)
               for w in wanted for have in ep.workloads)


def _labels(ep: pb.Endpoint) -> dict[str, str]:
    out = {}
    for label in ep.labels:
        key, _, value = label.partition("=")
        source, sep, bare = key.partition(":")
        out[bare if sep else key] = value
        out[key] = value
    return out


def _selector_matches(labels: dict[str, str], selector: str) -> bool:
    """Equality-based selectors: "k=v", "k!=v", "k" and "!k", comma-separated terms ANDed."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "==" in term or "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _protocol(flow: pb.Flow) -> str:
    return (flow.l4.WhichOneof("protocol") or "").lower()


def _ports(flow: pb.Flow) -> tuple[int, int]:
    kind = flow.l4.WhichOneof("protocol")
    if kind in ("TCP", "UDP", "SCTP"):
        l4 = getattr(flow.l4, kind)
        return l4.source_port, l4.destination_port
    return 0, 0


def _flags_match(flow: pb.Flow, wanted) -> bool:
    if flow.l4.WhichOneof("protocol") != "TCP":
        return False
    have = flow.l4.TCP.flags
    for flags in wanted:
        if all(getattr(have, f.name) for f in flags.DESCRIPTOR.fields if getattr(flags, f.name)):
            return True
    return False


def filter_matches(flow: pb.Flow, f: pb.FlowFilter) -> bool:
    src_port, dst_port = _ports(flow)
    checks = [
        (f.uuid, lambda: flow.uuid in f.uuid),
        (f.source_ip, lambda: _ip_matches(flow.IP.source, f.source_ip)),
        (f.destination_ip, lambda: _ip_matches(flow.IP.destination, f.destination_ip)),
        (f.source_pod, lambda: _pod_matches(flow.source, f.source_pod)),
        (f.destination_pod, lambda: _pod_matches(flow.destination, f.destination_pod)),
        (f.source_label, lambda: any(_selector_matches(_labels(flow.source), s) for s in f.source_label)),
        (f.destination_label,
         lambda: any(_selector_matches(_labels(flow.destination), s) for s in f.destination_label)),
        (f.source_service, lambda: _service_matches(flow.source_service, f.source_service)),
        (f.destination_service, lambda: _service_matches(flow.destination_service, f.destination_service)),
        (f.verdict, lambda: flow.verdict in f.verdict),
        (f.drop_reason_desc, lambda: flow.drop_reason_desc in f.drop_reason_desc),
        (f.source_workload, lambda: _workload_matches(flow.source, f.source_workload)),
        (f.destination_workload, lambda: _workload_matches(flow.destination, f.destination_workload)),
        (f.traffic_direction, lambda: flow.traffic_direction in f.traffic_direction),
        (f.protocol, lambda: _protocol(flow) in {p.lower() for p in f.protocol}),
        (f.source_port, lambda: str(src_port) in f.source_port),
        (f.destination_port, lambda: str(dst_port) in f.destination_port),
        (f.reply, lambda: flow.is_reply.value in f.reply),
        (f.source_identity, lambda: flow.source.identity in f.source_identity),
        (f.destination_identity, lambda: flow.destination.identity in f.destination_identity),
        (f.node_name, lambda: any(fnmatch.fnmatchcase(flow.node_name, p) for p in f.node_name)),
        (f.ip_version, lambda: flow.IP.ipVersion in f.ip_version),
        (f.tcp_flags, lambda: _flags_match(flow, f.tcp_flags)),
        (f.event_type, lambda: any(
            e.type == flow.event_type.type and (not e.match_sub_type or e.sub_type == flow.event_type.sub_type)
            for e in f.event_type)),
    ]
    return all(check() for present, check in checks if present)


def request_matches(flow: pb.Flow, whitelist, blacklist) -> bool:
    if whitelist and not any(filter_matches(flow, f) for f in whitelist):
        return False
    return not any(filter_matches(flow, f) for f in blacklist)
