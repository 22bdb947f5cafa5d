"""What `meshctl identities`, `meshctl policy` and `meshctl bpf` show, built from
the agent's state: the compiled policy (pure values) and the BPF maps (through
BCC's types, decoded field by field)."""
from __future__ import annotations

import ctypes
import socket
import struct

from ..model.identity import RESERVED, IdentityLabels
from ..model.netpol import PROTOCOL_NAMES
from ..model.policy import ANY_PROTO, EGRESS, EP_F_AUDIT, EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED, INGRESS
from ..model.policy import PolicyState
from .weft import agent_pb2

DIRECTIONS = {INGRESS: "ingress", EGRESS: "egress"}
# fields holding IPv4 addresses in network byte order, in the structs of bpf/lib/
ADDRESS_FIELDS = {"saddr", "daddr", "ip", "ipv4", "vip", "client_ip", "rev_nat_addr", "orig_daddr", "node_ip"}


def _brief(labels: IdentityLabels) -> str:
    pod = ",".join(f"{k}={v}" for k, v in labels.pod_labels)
    return f"{labels.namespace}: {pod}" if pod else f"{labels.namespace}: (no labels)"


def peer_name(state: PolicyState, identity: int) -> str:
    if identity == 0:
        return "any"
    if identity in RESERVED:
        return f"reserved:{RESERVED[identity]}"
    if identity in state.identities:
        return _brief(state.identities[identity])
    if identity in state.cidr_identities:
        return f"cidr:{state.cidr_identities[identity]}"
    return f"identity {identity}"


def identities(node: str, state: PolicyState) -> agent_pb2.IdentitiesResponse:
    pods: dict[int, list[str]] = {}
    for pod, number in sorted(state.pod_identity.items()):
        pods.setdefault(number, []).append(pod)
    out = [agent_pb2.Identity(id=i, labels=[f"reserved:{name}"], kind="reserved") for i, name in RESERVED.items()]
    out += [agent_pb2.Identity(id=i, labels=labels.as_strings(), kind="workload", pods=pods.get(i, []))
            for i, labels in sorted(state.identities.items())]
    out += [agent_pb2.Identity(id=i, labels=[f"cidr:{net}"], kind="cidr")
            for i, net in sorted(state.cidr_identities.items())]
    return agent_pb2.IdentitiesResponse(node_name=node, identities=out)


def _port_ranges(blocks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Port prefixes (value, bits) merged back into inclusive ranges."""
    spans = sorted((value, value + (1 << (16 - bits)) - 1) for value, bits in blocks)
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def _rules(state: PolicyState, pod: str) -> list[agent_pb2.PolicyRule]:
    grouped: dict[tuple[int, int, int, int], list[tuple[int, int]]] = {}
    for (ep, identity, direction, proto, port, prefix), policy_id in state.entries.items():
        if ep == pod:
            bits = 0 if prefix == ANY_PROTO else prefix
            grouped.setdefault((direction, identity, proto if prefix != ANY_PROTO else 0, policy_id), []).append(
                (port, bits))
    rules = []
    for (direction, identity, proto, policy_id), blocks in sorted(grouped.items()):
        for lo, hi in _port_ranges(blocks):
            ports = "any" if (lo, hi) == (0, 65535) else str(lo) if lo == hi else f"{lo}-{hi}"
            policy = "/".join(state.policy_names[policy_id]) if policy_id in state.policy_names else ""
            rules.append(agent_pb2.PolicyRule(
                direction=DIRECTIONS[direction], peer_identity=identity, peer=peer_name(state, identity),
                protocol=PROTOCOL_NAMES.get(proto, "any"), ports=ports, policy=policy))
    return rules


def policy(node: str, state: PolicyState, endpoint_ids: dict[str, int], pod: str = "") -> agent_pb2.PolicyResponse:
    out = agent_pb2.PolicyResponse(node_name=node, errors=state.errors)
    for key, flags in sorted(state.endpoint_flags.items()):
        if pod and key != pod:
            continue
        namespace, name = key.split("/", 1)
        isolated = state.isolated_by.get(key, {})
        out.endpoints.add(
            namespace=namespace, pod_name=name, endpoint_id=endpoint_ids.get(key, 0),
            identity=state.pod_identity.get(key, 0),
            ingress_enforced=bool(flags & EP_F_INGRESS_ENFORCED), egress_enforced=bool(flags & EP_F_EGRESS_ENFORCED),
            audit=bool(flags & EP_F_AUDIT),
            ingress_isolated_by=["/".join(k) for k in isolated.get(INGRESS, [])],
            egress_isolated_by=["/".join(k) for k in isolated.get(EGRESS, [])],
            rules=_rules(state, key))
    return out


# ---- BPF maps ----------------------------------------------------------------------

def render(value, name: str = "") -> str:
    """A map key or value of BCC's ctypes types as text, addresses dotted."""
    if isinstance(value, ctypes.Structure):
        return " ".join(f"{field}={render(getattr(value, field), field)}" for field, _ in value._fields_
                        if not field.startswith("pad"))
    if isinstance(value, ctypes.Array):
        return "[" + ",".join(render(v) for v in value) + "]"
    if hasattr(value, "value"):  # c_uint and friends
        value = value.value
    if name in ADDRESS_FIELDS and isinstance(value, int):
        return socket.inet_ntoa(struct.pack("=I", value & 0xFFFFFFFF))
    return str(value)


def _per_cpu_total(values) -> str:
    """A per-CPU value summed over the CPUs, field by field."""
    first = values[0]
    if isinstance(first, ctypes.Structure):
        return " ".join(f"{field}={sum(getattr(v, field) for v in values)}" for field, _ in first._fields_)
    return str(sum(int(v) for v in values))


def bpf_map(node: str, names: list[str], table_of, name: str, limit: int = 0) -> agent_pb2.BpfMapResponse:
    """`names`: the maps there are; `table_of(name)`: BCC's table. KeyError for an unknown name."""
    out = agent_pb2.BpfMapResponse(node_name=node, name=name, maps=sorted(names))
    if not name:
        return out
    if name not in names:
        raise KeyError(name)
    table = table_of(name)
    per_cpu = type(table).__name__.startswith("PerCpu")
    limit = limit or 1000
    for count, (key, value) in enumerate(table.items()):
        if count >= limit:
            out.truncated = True
            break
        text = _per_cpu_total(value) if per_cpu else render(value)
        if per_cpu and text in ("0", "packets=0 bytes=0"):
            continue  # per-CPU arrays: only slots that counted something
        out.entries.add(key=render(key), value=text)
    return out
