"""NetworkPolicy compiled to what the datapath looks up (bpf/lib/policy.h).

`PolicyCompiler.compile` turns the cluster (pods, namespaces, policies) into a
`PolicyState`: the identity of every pod, the IP->identity cache, and per local
endpoint its isolation flags, the prefix kinds its rules use, and allow entries
over (peer identity, protocol, port prefix). The datapath writers diff two states and write the difference,
so a change touches only the entries it changes. `PolicyState.decide` makes the
datapath's decision in Python, the same lookups in the same order: the unit
tests and `meshctl policy` ask it.

ipBlock rules: every ipBlock prefix (cidr and except) gets a node-local CIDR
identity, and every address carries, besides its own identity, the identity
of the most specific such prefix holding it. A block `cidr` minus `except`
then selects exactly the prefixes inside `cidr` and inside no `except`, and an
address matches the block iff its most specific prefix is one of those.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from .cluster import Cluster, Pod
from .identity import (FIRST_CIDR_IDENTITY, IDENTITY_ANY, IDENTITY_HOST, IDENTITY_REMOTE_NODE,
                       IDENTITY_WORLD, IdentityAllocator, IdentityLabels)
from .netpol import PROTOCOL_NAMES, IPBlock, NetworkPolicy, PodPeer, PolicyError, PortSpec, Rule, parse_policy

log = logging.getLogger(__name__)

INGRESS, EGRESS = 1, 2  # enum weft_direction
EP_F_INGRESS_ENFORCED, EP_F_EGRESS_ENFORCED, EP_F_AUDIT = 0x1, 0x2, 0x4  # bpf/lib/endpoint.h
ANY_PROTO = 17  # POLICY_ANY_PROTO of bpf/lib/policy.h; 0..16 are port prefix lengths
AUDIT_ANNOTATION = "policy.weft.dev/audit-mode"
ALLOWED, DENIED, AUDITED = 0, 1, 2  # enum policy_verdict

# (endpoint pod key, peer identity, direction, protocol or 0, port prefix value, prefix bits or ANY_PROTO)
PolicyKey = tuple[str, int, int, int, int, int]


def port_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The inclusive range lo..hi as aligned (value, prefix bits) blocks."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 17 - size.bit_length()))
        lo += size
    return out


def ip_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


@dataclass
class PolicyState:
    endpoint_flags: dict[str, int] = field(default_factory=dict)
    pod_identity: dict[str, int] = field(default_factory=dict)
    entries: dict[PolicyKey, int] = field(default_factory=dict)  # -> policy id
    ipcache: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (ip, plen) -> ids
    identities: dict[int, IdentityLabels] = field(default_factory=dict)
    cidr_identities: dict[int, str] = field(default_factory=dict)
    policy_names: dict[int, tuple[str, str]] = field(default_factory=dict)
    # pod key -> direction -> the policies that isolate it that way (for explanations)
    isolated_by: dict[str, dict[int, list[tuple[str, str]]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _prefixes: dict[tuple[str, int], int] = field(default_factory=dict)

    def index_prefixes(self) -> None:
        """Derive every endpoint's prefix bitmaps from the entries."""
        self._prefixes = {}
        for ep, _, direction, _, _, prefix in self.entries:
            self._prefixes[(ep, direction)] = self._prefixes.get((ep, direction), 0) | (1 << prefix)

    def lookup_ip(self, ip: str) -> tuple[int, int]:
        """The ipcache's longest-prefix match: (identity, CIDR identity)."""
        value = ip_int(ip)
        for plen in range(32, -1, -1):
            net = value & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            hit = self.ipcache.get((str(ipaddress.IPv4Address(net)), plen))
            if hit:
                return hit
        return IDENTITY_WORLD, IDENTITY_WORLD

    def prefixes(self, ep: str, direction: int) -> int:
        """The bitmap of prefix kinds `ep` uses in `direction` (endpoint_info's *_prefixes)."""
        return self._prefixes.get((ep, direction), 0)

    def _find(self, ep: str, identity: int, direction: int, proto: int, port: int) -> int | None:
        prefixes = self.prefixes(ep, direction)
        for bits in range(16, -1, -1):
            if prefixes & (1 << bits):
                masked = port & (0xFFFF0000 >> bits) & 0xFFFF
                hit = self.entries.get((ep, identity, direction, proto, masked, bits))
                if hit is not None:
                    return hit
        if prefixes & (1 << ANY_PROTO):
            return self.entries.get((ep, identity, direction, 0, 0, ANY_PROTO))
        return None

    def decide(self, ep: str, direction: int, peer_ip: str, proto: int, port: int) -> tuple[int, int]:
        """(verdict, policy id) for a packet of local endpoint `ep` to/from `peer_ip`,
        as bpf/lib/policy.h's policy_check decides it."""
        flags = self.endpoint_flags.get(ep, 0)
        if not flags & (EP_F_INGRESS_ENFORCED if direction == INGRESS else EP_F_EGRESS_ENFORCED):
            return ALLOWED, 0
        identity, cidr_identity = self.lookup_ip(peer_ip)
        for candidate in dict.fromkeys((identity, cidr_identity, IDENTITY_ANY)):
            hit = self._find(ep, candidate, direction, proto, 0 if proto == 1 else port)
            if hit is not None:
                return ALLOWED, hit
        return (AUDITED if flags & EP_F_AUDIT else DENIED), 0


class PolicyCompiler:
    """Keeps what must stay stable between compilations: policy ids, CIDR identities."""

    def __init__(self, allocator: IdentityAllocator, audit: bool = False):
        self.allocator = allocator
        self.audit = audit
        self.policy_ids: dict[tuple[str, str], int] = {}
        self.cidr_ids: dict[ipaddress.IPv4Network, int] = {}
        self._parsed: dict[tuple[str, str], tuple[dict, NetworkPolicy | PolicyError]] = {}

    # ---- inputs ------------------------------------------------------------------

    def policies(self, cluster: Cluster, errors: list[str]) -> list[NetworkPolicy]:
        out, seen = [], set()
        for key, obj in cluster.objects.items():
            if key.kind != "NetworkPolicy":
                continue
            name = (key.namespace, key.name)
            seen.add(name)
            cached = self._parsed.get(name)
            if cached is None or cached[0] is not obj:
                try:
                    cached = (obj, parse_policy(obj))
                except PolicyError as exc:
                    cached = (obj, exc)
                self._parsed[name] = cached
            if isinstance(cached[1], PolicyError):
                errors.append(str(cached[1]))
            else:
                out.append(cached[1])
        for name in set(self._parsed) - seen:
            del self._parsed[name]
        return sorted(out, key=lambda p: p.key)

    def _policy_id(self, key: tuple[str, str]) -> int:
        if key not in self.policy_ids:
            self.policy_ids[key] = len(self.policy_ids) + 1
        return self.policy_ids[key]

    def _cidr_id(self, net: ipaddress.IPv4Network) -> int:
        if net not in self.cidr_ids:
            self.cidr_ids[net] = FIRST_CIDR_IDENTITY + len(self.cidr_ids)
        return self.cidr_ids[net]

    # ---- compilation --------------------------------------------------------------

    def compile(self, cluster: Cluster, local: dict[str, Pod]) -> PolicyState:
        state = PolicyState()
        policies = self.policies(cluster, state.errors)
        pods = [p for p in cluster.pods.values() if p.ip] + [p for p in local.values() if not p.ip]
        labels_of = {p.key: IdentityLabels.of(p.namespace, p.labels, cluster.namespaces.get(p.namespace, {}))
                     for p in pods}
        numbers = self.allocator.allocate(sorted(set(labels_of.values()), key=IdentityLabels.key))
        state.pod_identity = {key: numbers[labels] for key, labels in labels_of.items()}
        state.identities = {numbers[labels]: labels for labels in labels_of.values()}

        prefixes = sorted({net for p in policies for rules in (p.ingress, p.egress) for r in rules or ()
                           for peer in r.peers or () if isinstance(peer, IPBlock)
                           for net in (peer.cidr, *peer.excepts)}, key=lambda n: (n.prefixlen, n))
        cidr_index = CidrIndex({net: self._cidr_id(net) for net in prefixes})
        state.cidr_identities = {i: str(net) for net, i in cidr_index.ids.items()}
        self._fill_ipcache(state, cluster, pods, cidr_index)

        selection = Selection(state, cluster, cidr_index,
                              {p.key: p for p in pods if p.ip})
        for key, pod in sorted(local.items()):
            self._compile_endpoint(state, cluster, pod, policies, selection)
        state.index_prefixes()
        return state

    def _fill_ipcache(self, state: PolicyState, cluster: Cluster, pods: list[Pod], cidrs: "CidrIndex") -> None:
        for net, cidr_identity in cidrs.ids.items():
            state.ipcache[(str(net.network_address), net.prefixlen)] = (IDENTITY_WORLD, cidr_identity)
        for node in cluster.nodes.values():
            if node.internal_ip:
                identity = IDENTITY_HOST if node.name == cluster.node_name else IDENTITY_REMOTE_NODE
                state.ipcache[(node.internal_ip, 32)] = (identity, cidrs.of(node.internal_ip))
        for pod in pods:
            if pod.ip:
                state.ipcache[(pod.ip, 32)] = (state.pod_identity[pod.key], cidrs.of(pod.ip))

    def _compile_endpoint(self, state: PolicyState, cluster: Cluster, pod: Pod,
                          policies: list[NetworkPolicy], selection: "Selection") -> None:
        labels = pod.label_dict
        flags = EP_F_AUDIT if self.audit or cluster.namespace_annotations.get(
            pod.namespace, {}).get(AUDIT_ANNOTATION) == "true" else 0
        isolated: dict[int, list[tuple[str, str]]] = {INGRESS: [], EGRESS: []}
        for policy in policies:
            if policy.namespace != pod.namespace or not policy.pod_selector.matches(labels):
                continue
            policy_id = self._policy_id(policy.key)
            state.policy_names[policy_id] = policy.key
            for direction, rules in ((INGRESS, policy.ingress), (EGRESS, policy.egress)):
                if rules is None:
                    continue
                isolated[direction].append(policy.key)
                for index, rule in enumerate(rules):
                    for key in selection.rule_entries(pod, policy, direction, index, rule):
                        state.entries.setdefault(key, policy_id)
        if isolated[INGRESS]:
            flags |= EP_F_INGRESS_ENFORCED
            # the node itself (kubelet probes) always reaches its pods, as with every CNI
            state.entries.setdefault((pod.key, IDENTITY_HOST, INGRESS, 0, 0, ANY_PROTO), 0)
        if isolated[EGRESS]:
            flags |= EP_F_EGRESS_ENFORCED
        state.endpoint_flags[pod.key] = flags
        state.isolated_by[pod.key] = isolated


class CidrIndex:
    """The ipBlock prefixes and their identities; the most specific one holding an IP."""

    def __init__(self, ids: dict[ipaddress.IPv4Network, int]):
        self.ids = ids
        self.by_len = sorted({n.prefixlen for n in ids}, reverse=True)
        self.lookup = {(int(n.network_address), n.prefixlen): i for n, i in ids.items()}

    def of(self, ip: str) -> int:
        value = ip_int(ip)
        for plen in self.by_len:
            hit = self.lookup.get((value & (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF, plen))
            if hit:
                return hit
        return IDENTITY_WORLD

    def selected_by(self, block: IPBlock) -> set[int]:
        return {i for net, i in self.ids.items()
                if net.subnet_of(block.cidr) and not any(net.subnet_of(e) for e in block.excepts)}


class Selection:
    """Which identities a rule's peers select, and the ports each may use."""

    def __init__(self, state: PolicyState, cluster: Cluster, cidrs: CidrIndex, pods: dict[str, Pod]):
        self.state = state
        self.cluster = cluster
        self.cidrs = cidrs
        self.pods = pods
        self._peers: dict[tuple, set[int] | None] = {}
        self.pods_of: dict[int, list[Pod]] = {}  # identity (workload or CIDR) -> pods
        for pod in pods.values():
            self.pods_of.setdefault(state.pod_identity[pod.key], []).append(pod)
            self.pods_of.setdefault(cidrs.of(pod.ip), []).append(pod)

    def peers(self, policy: NetworkPolicy, direction: int, index: int, rule: Rule) -> set[int] | None:
        """Identities the rule's peers select; None for any peer. Cached per rule."""
        key = (policy.key, direction, index)
        if key not in self._peers:
            self._peers[key] = None if rule.peers is None else set().union(
                *(self._peer(policy.namespace, p) for p in rule.peers))
        return self._peers[key]

    def _peer(self, namespace: str, peer: PodPeer | IPBlock) -> set[int]:
        if isinstance(peer, IPBlock):
            return self.cidrs.selected_by(peer)
        out = set()
        for number, labels in self.state.identities.items():
            if peer.namespaces is None:
                if labels.namespace != namespace:
                    continue
            elif not peer.namespaces.matches(dict(labels.namespace_labels)):
                continue
            if peer.pods.matches(dict(labels.pod_labels)):
                out.add(number)
        return out

    def rule_entries(self, pod: Pod, policy: NetworkPolicy, direction: int, index: int, rule: Rule):
        peers = self.peers(policy, direction, index, rule)
        identities = sorted(peers) if peers is not None else [IDENTITY_ANY]
        if rule.ports is None:
            for identity in identities:
                yield pod.key, identity, direction, 0, 0, ANY_PROTO
            return
        for spec in rule.ports:
            for identity in identities:
                # a named port is resolved on the destination: this pod for
                # ingress, the peer's pods for egress
                targets = [pod] if direction == INGRESS else self._destinations(identity)
                for port, bits in self._port_blocks(spec, targets):
                    yield pod.key, identity, direction, spec.proto, port, bits

    def _destinations(self, identity: int) -> list[Pod]:
        return list(self.pods.values()) if identity == IDENTITY_ANY else self.pods_of.get(identity, [])

    @staticmethod
    def _port_blocks(spec: PortSpec, targets: list[Pod]) -> list[tuple[int, int]]:
        if spec.port is None:
            return [(0, 0)]
        if isinstance(spec.port, int):
            return port_prefixes(spec.port, spec.end_port or spec.port)
        proto = PROTOCOL_NAMES[spec.proto]
        numbers = {p.port for pod in targets for p in pod.ports if p.name == spec.port and p.protocol == proto}
        return [(n, 16) for n in sorted(numbers)]
