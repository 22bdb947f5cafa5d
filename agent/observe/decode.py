"""Turns datapath flow events into Hubble Flow messages, enriched from the model.

The event's layout is BCC's type for struct flow_event (bpf/lib/flow.h).
Numbers the datapath reports (verdict, drop reason, direction) are already
Hubble's, so they pass straight through.
"""
from __future__ import annotations

import socket
import time
import uuid
from typing import Callable

from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import BoolValue

from ..api.flow import flow_pb2 as pb
from ..datapath.maps import be32_to_ip as _ip
from ..model.cluster import Cluster, Pod
from ..model.identity import IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD
from ..model.policy import PolicyState

# Cilium's monitor message types and trace sub-types.
MSG_DROP = 1
MSG_TRACE = 4
TRACE_TO_LXC = 0
TRACE_FROM_LXC = 5
TRACE_FROM_NETWORK = 10

POINT_NETWORK = 1  # enum flow_point in bpf/lib/flow.h

EVENT_NEW = 1
EVENT_DROP = 2
DROP_POLICY_DENIED = 133

DIR_INGRESS = 1  # to the pod
DIR_EGRESS = 2   # from the pod


TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def monotonic_to_wall_offset_ns() -> int:
    """Add to a CLOCK_MONOTONIC (bpf_ktime_get_ns) stamp to get wall-clock ns."""
    return time.time_ns() - time.monotonic_ns()


def tcp_flags(bits: int) -> pb.TCPFlags:
    return pb.TCPFlags(**{name: True for i, name in enumerate(TCP_FLAG_NAMES) if bits & (1 << i)})


class FlowDecoder:
    def __init__(self, node_name: str, cluster: Cluster, ifname: Callable[[int], str],
                 service_of: Callable[..., tuple[str, str] | None] = lambda *_: None,
                 policy: Callable[[], PolicyState] = PolicyState):
        self.node_name = node_name
        self.policy = policy
        self.cluster = cluster
        self.ifname = ifname
        self.service_of = service_of
        self.offset_ns = monotonic_to_wall_offset_ns()

    def endpoint(self, ip: str, ep_id: int, policy: PolicyState) -> pb.Endpoint:
        pod = self.cluster.pod_by_ip(ip)
        if pod is not None:
            ep = self._pod_endpoint(pod, ep_id)
            ep.identity = policy.pod_identity.get(pod.key, 0)
            return ep
        node = self.cluster.nodes.get(self.node_name)
        if node and node.internal_ip == ip:
            return pb.Endpoint(identity=IDENTITY_HOST, labels=["reserved:host"])
        if any(n.internal_ip == ip for n in self.cluster.nodes.values()):
            return pb.Endpoint(identity=IDENTITY_REMOTE_NODE, labels=["reserved:remote-node"])
        return pb.Endpoint(identity=IDENTITY_WORLD, labels=["reserved:world"])

    @staticmethod
    def _pod_endpoint(pod: Pod, ep_id: int) -> pb.Endpoint:
        ep = pb.Endpoint(
            ID=ep_id,
            namespace=pod.namespace,
            pod_name=pod.name,
            labels=[f"k8s:{k}={v}" for k, v in pod.labels],
        )
        if pod.workload:
            ep.workloads.add(name=pod.workload.name, kind=pod.workload.kind)
        return ep

    def decode(self, ev) -> pb.Flow:
        saddr, daddr = _ip(ev.saddr), _ip(ev.daddr)
        flow = pb.Flow(
            uuid=str(uuid.uuid4()),
            verdict=ev.verdict,
            IP=pb.IP(source=saddr, destination=daddr, ipVersion=pb.IPv4),
            Type=pb.L3_L4,
            node_name=self.node_name,
            traffic_direction=ev.direction,
            is_reply=BoolValue(value=bool(ev.is_reply)),
            interface=pb.NetworkInterface(index=ev.ifindex, name=self.ifname(ev.ifindex)),
        )
        flow.time.CopyFrom(_timestamp(ev.ktime_ns + self.offset_ns))
        if ev.proto == socket.IPPROTO_TCP:
            flow.l4.TCP.CopyFrom(pb.TCP(source_port=ev.sport, destination_port=ev.dport,
                                        flags=tcp_flags(ev.tcp_flags)))
        elif ev.proto == socket.IPPROTO_UDP:
            flow.l4.UDP.CopyFrom(pb.UDP(source_port=ev.sport, destination_port=ev.dport))
        elif ev.proto == socket.IPPROTO_ICMP:
            flow.l4.ICMPv4.CopyFrom(pb.ICMPv4(type=ev.dport >> 8, code=ev.dport & 0xFF))
        # the local endpoint is the destination on ingress, the source on egress
        src_ep = ev.ep_id if ev.direction == DIR_EGRESS else 0
        dst_ep = ev.ep_id if ev.direction == DIR_INGRESS else 0
        policy = self.policy()
        flow.source.CopyFrom(self.endpoint(saddr, src_ep, policy))
        flow.destination.CopyFrom(self.endpoint(daddr, dst_ep, policy))
        self._policies(flow, ev, policy, saddr if ev.direction == DIR_EGRESS else daddr)
        orig = getattr(ev, "orig_daddr", 0)
        if orig:
            proto = "TCP" if ev.proto == socket.IPPROTO_TCP else "UDP"
            external = getattr(ev, "point", 0) == POINT_NETWORK
            svc = self.service_of(_ip(orig), ev.orig_dport, proto, external)
            if svc:
                flow.destination_service.namespace, flow.destination_service.name = svc
        if ev.kind == EVENT_DROP:
            flow.drop_reason = ev.drop_reason
            flow.drop_reason_desc = ev.drop_reason
            flow.event_type.type = MSG_DROP
            flow.event_type.sub_type = ev.drop_reason
        else:
            flow.event_type.type = MSG_TRACE
            if getattr(ev, "point", 0) == POINT_NETWORK:
                flow.event_type.sub_type = TRACE_FROM_NETWORK
                flow.trace_observation_point = pb.FROM_NETWORK
            elif ev.direction == DIR_INGRESS:
                flow.event_type.sub_type = TRACE_TO_LXC
                flow.trace_observation_point = pb.TO_ENDPOINT
            else:
                flow.event_type.sub_type = TRACE_FROM_LXC
                flow.trace_observation_point = pb.FROM_ENDPOINT
        return flow


    def _policies(self, flow: pb.Flow, ev, policy: PolicyState, local_ip: str) -> None:
        """Name the policy that allowed the flow, or those that isolate the pod
        when none allowed it."""
        egress = ev.direction == DIR_EGRESS
        policy_id = getattr(ev, "policy_id", 0)
        if policy_id in policy.policy_names:
            namespace, name = policy.policy_names[policy_id]
            allowed = flow.egress_allowed_by if egress else flow.ingress_allowed_by
            allowed.add(namespace=namespace, name=name, kind="NetworkPolicy")
        if ev.drop_reason == DROP_POLICY_DENIED:
            flow.drop_reason_desc = DROP_POLICY_DENIED
            pod = self.cluster.pod_by_ip(local_ip)
            isolating = policy.isolated_by.get(pod.key, {}) if pod else {}
            denied = flow.egress_denied_by if egress else flow.ingress_denied_by
            for namespace, name in isolating.get(DIR_EGRESS if egress else DIR_INGRESS, []):
                denied.add(namespace=namespace, name=name, kind="NetworkPolicy")


def _timestamp(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts
