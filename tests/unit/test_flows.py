"""Flow decoding, filtering and formatting: no kernel needed."""
from __future__ import annotations

import json
import re
import socket
from types import SimpleNamespace

import pytest
from google.protobuf import json_format

from agent.api.flow import flow_pb2 as pb
from agent.api.observer import observer_pb2
from agent.model.cluster import Cluster
from agent.observe.decode import FlowDecoder
from agent.observe.filters import filter_matches, request_matches
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey
from agent.api.drop_reasons import describe
from bpf import SOURCE_DIR
from cli.flows import build_filters, compact


def ip_u32(ip):
    return int.from_bytes(socket.inet_aton(ip), "little")


def cluster():
    c = Cluster("node-1")
    for name, ip, node in [("a", "10.244.1.2", "node-1"), ("c", "10.244.2.2", "node-2")]:
        c.apply(Event(EventType.ADDED, ObjectKey("Pod", "t", name), {
            "kind": "Pod", "metadata": {"name": name, "namespace": "t", "labels": {"app": name}},
            "spec": {"nodeName": node}, "status": {"podIP": ip, "phase": "Running"}}))
    c.apply(Event(EventType.ADDED, ObjectKey("Node", "", "node-1"), {
        "kind": "Node", "metadata": {"name": "node-1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.11"}]}}))
    return c


def event(**kw):
    base = dict(ktime_ns=1_000_000_000, saddr=ip_u32("10.244.1.2"), daddr=ip_u32("10.244.2.2"),
                sport=40000, dport=8080, ifindex=5, ep_id=3, len=60, drop_reason=0,
                proto=socket.IPPROTO_TCP, verdict=1, direction=2, tcp_flags=0x02, is_reply=0, kind=1)
    base.update(kw)
    return SimpleNamespace(**base)


def decoder():
    return FlowDecoder("node-1", cluster(), lambda i: f"lxc{i}")


def test_decode_egress_tcp_flow_enriched_from_the_model():
    f = decoder().decode(event())
    assert (f.IP.source, f.IP.destination, f.IP.ipVersion) == ("10.244.1.2", "10.244.2.2", pb.IPv4)
    assert f.l4.TCP.source_port == 40000 and f.l4.TCP.destination_port == 8080
    assert f.l4.TCP.flags.SYN and not f.l4.TCP.flags.ACK
    assert (f.source.namespace, f.source.pod_name, f.source.ID) == ("t", "a", 3)
    assert list(f.source.labels) == ["k8s:app=a"]
    assert (f.destination.pod_name, f.destination.ID) == ("c", 0)
    assert f.verdict == pb.FORWARDED and f.traffic_direction == pb.EGRESS
    assert f.trace_observation_point == pb.FROM_ENDPOINT
    assert (f.event_type.type, f.event_type.sub_type) == (4, 5)
    assert f.interface.name == "lxc5" and f.node_name == "node-1"
    assert f.is_reply.value is False and f.uuid


def test_decode_drop_and_reserved_identities():
    f = decoder().decode(event(kind=2, verdict=2, drop_reason=135, direction=1,
                               saddr=ip_u32("172.18.0.11"), daddr=ip_u32("8.8.8.8"), proto=socket.IPPROTO_UDP))
    assert f.verdict == pb.DROPPED and f.drop_reason_desc == pb.CT_TRUNCATED_OR_INVALID_HEADER
    assert (f.event_type.type, f.event_type.sub_type) == (1, 135)
    assert f.source.identity == 1 and f.destination.identity == 2  # host, world
    assert f.l4.UDP.destination_port == 8080


def test_decode_icmp_type_and_code():
    f = decoder().decode(event(proto=socket.IPPROTO_ICMP, sport=7, dport=(3 << 8) | 3))
    assert (f.l4.ICMPv4.type, f.l4.ICMPv4.code) == (3, 3)


def flow(**kw) -> pb.Flow:
    return decoder().decode(event(**kw))


@pytest.mark.parametrize("filt,matches", [
    (pb.FlowFilter(source_pod=["t/a"]), True),
    (pb.FlowFilter(source_pod=["t/"]), True),
    (pb.FlowFilter(source_pod=["t/c"]), False),
    (pb.FlowFilter(source_pod=["a"]), False),  # bare names are in the default namespace
    (pb.FlowFilter(destination_ip=["10.244.2.0/24"]), True),
    (pb.FlowFilter(destination_ip=["10.244.2.3"]), False),
    (pb.FlowFilter(source_label=["app=a"]), True),
    (pb.FlowFilter(source_label=["k8s:app=a"]), True),
    (pb.FlowFilter(source_label=["app!=a"]), False),
    (pb.FlowFilter(source_label=["app", "team=x"]), True),  # OR within a field
    (pb.FlowFilter(verdict=[pb.DROPPED]), False),
    (pb.FlowFilter(protocol=["TCP"]), True),
    (pb.FlowFilter(protocol=["udp"]), False),
    (pb.FlowFilter(destination_port=["8080"]), True),
    (pb.FlowFilter(source_pod=["t/a"], destination_port=["80"]), False),  # AND across fields
    (pb.FlowFilter(node_name=["node-*"]), True),
    (pb.FlowFilter(traffic_direction=[pb.INGRESS]), False),
    (pb.FlowFilter(tcp_flags=[pb.TCPFlags(SYN=True)]), True),
    (pb.FlowFilter(tcp_flags=[pb.TCPFlags(SYN=True, ACK=True)]), False),
    (pb.FlowFilter(event_type=[pb.EventTypeFilter(type=4)]), True),
    (pb.FlowFilter(event_type=[pb.EventTypeFilter(type=4, match_sub_type=True, sub_type=0)]), False),
])
def test_filter_semantics(filt, matches):
    assert filter_matches(flow(), filt) is matches


def test_whitelist_any_blacklist_excludes():
    f = flow()
    yes, no = pb.FlowFilter(source_pod=["t/a"]), pb.FlowFilter(source_pod=["t/c"])
    assert request_matches(f, [no, yes], [])
    assert not request_matches(f, [no], [])
    assert not request_matches(f, [], [yes])
    assert request_matches(f, [], [])


def opts(**kw):
    base = {k: () for k in ("verdict", "protocol", "node", "from_pod", "to_pod", "from_ip", "to_ip",
                            "from_label", "to_label", "pod", "namespace", "ip", "label", "port", "service")}
    base.update(kw)
    return base


def test_cli_either_side_flags_expand_like_hubble():
    filters = build_filters(opts(pod=("t/c",), protocol=("tcp",)))
    assert len(filters) == 2
    f = flow()  # t/a -> t/c
    assert request_matches(f, filters, [])
    reverse = flow(saddr=ip_u32("10.244.2.2"), daddr=ip_u32("10.244.1.2"))
    assert request_matches(reverse, filters, [])
    assert not request_matches(flow(proto=socket.IPPROTO_UDP), filters, [])
    assert build_filters(opts()) == []
    assert build_filters(opts(to_pod=("c",)))[0].destination_pod == ["default/c"]


def test_compact_line_and_json_round_trip():
    resp = observer_pb2.GetFlowsResponse(flow=flow(), node_name="node-1")
    line = compact(resp)
    assert "[node-1]: t/a:40000 -> t/c:8080 from-endpoint FORWARDED (TCP Flags: SYN)" in line
    drop = observer_pb2.GetFlowsResponse(flow=flow(kind=2, verdict=2, drop_reason=135))
    assert "CT: Truncated or invalid header DROPPED" in compact(drop), "hubble's words for the reason"
    text = json.dumps(json_format.MessageToDict(resp))
    back = json_format.Parse(text, observer_pb2.GetFlowsResponse())
    assert back == resp


def test_service_filter_and_compact_names_the_service():
    f = FlowDecoder("node-1", cluster(), lambda i: "", lambda ip, port, proto, external=False: ("t", "web")).decode(
        event(orig_daddr=ip_u32("10.96.0.10"), orig_dport=80))
    assert (f.destination_service.namespace, f.destination_service.name) == ("t", "web")
    assert filter_matches(f, pb.FlowFilter(destination_service=["t/web"]))
    assert not filter_matches(f, pb.FlowFilter(destination_service=["t/db"]))
    assert request_matches(f, build_filters(opts(service=("t/web",))), [])
    assert "-> t/c:8080 [service t/web] from-endpoint" in compact(observer_pb2.GetFlowsResponse(flow=f))


def test_not_negates_the_next_filter_into_the_blacklist(monkeypatch):
    from click.testing import CliRunner

    import cli.flows as cf

    sent = []

    def capture(name, address, request, out):
        sent.append(request)
        out.put((name, None))
    monkeypatch.setattr(cf, "_stream", capture)
    monkeypatch.setattr(cf.agents, "addresses", lambda server: {"n1": "unix:///nowhere"})
    result = CliRunner().invoke(cf.flows, ["--protocol", "tcp", "--not", "--pod", "t/a"])
    assert result.exit_code == 0, result.output
    request = sent[-1]
    assert [list(f.protocol) for f in request.whitelist] == [["tcp"]]
    f = decoder().decode(event())  # t/a -> t/c, FORWARDED
    assert not request_matches(f, request.whitelist, request.blacklist)
    other = decoder().decode(event(saddr=ip_u32("10.244.2.2"), daddr=ip_u32("10.244.2.9")))
    assert request_matches(other, request.whitelist, request.blacklist)
    # as in hubble observe, negated filters of different kinds form one blacklist (ANDed):
    # this excludes t/a's dropped flows, not its forwarded ones
    CliRunner().invoke(cf.flows, ["--not", "--pod", "t/a", "--not", "--verdict=DROPPED"])
    both = sent[-1]
    assert request_matches(f, both.whitelist, both.blacklist)
    dropped = decoder().decode(event(kind=2, verdict=2, drop_reason=135))
    assert not request_matches(dropped, both.whitelist, both.blacklist)
    bad = CliRunner().invoke(cf.flows, ["--not", "--last", "3"])
    assert bad.exit_code == 2 and "--not must be followed by a filter" in bad.output


def test_every_drop_reason_weft_reports_has_hubbles_description():
    enum = (SOURCE_DIR / "lib" / "common.h").read_text().split("enum weft_drop_reason", 1)[1].split("};")[0]
    codes = [int(n) for n in re.findall(r"=\s*(\d+)", enum) if int(n)]
    assert codes and all(not describe(c).isupper() for c in codes), [describe(c) for c in codes]
    assert describe(133) == "Policy denied" and describe(250) == "drop reason 250"


def test_drop_reason_direction_type_tcp_flags_and_workload_filters():
    from cli.flows import flows as flows_command

    ctx = flows_command.make_context("flows", ["--drop-reason-desc", "policy_denied", "--traffic-direction",
                                                "ingress", "-t", "drop", "--tcp-flags", "SYN"])
    (f,) = build_filters(ctx.params)
    drop = pb.Flow(verdict=pb.DROPPED, drop_reason_desc=pb.POLICY_DENIED, traffic_direction=pb.INGRESS,
                   event_type=pb.CiliumEventType(type=1, sub_type=133))
    drop.l4.TCP.flags.SYN = True
    assert filter_matches(drop, f)
    for change in (lambda x: setattr(x, "drop_reason_desc", pb.CT_MAP_INSERTION_FAILED),
                   lambda x: setattr(x, "traffic_direction", pb.EGRESS),
                   lambda x: x.event_type.CopyFrom(pb.CiliumEventType(type=4)),
                   lambda x: setattr(x.l4.TCP.flags, "SYN", False)):
        other = pb.Flow()
        other.CopyFrom(drop)
        change(other)
        assert not filter_matches(other, f)
    web = pb.Flow(source=pb.Endpoint(workloads=[pb.Workload(kind="Deployment", name="web")]))
    assert filter_matches(web, pb.FlowFilter(source_workload=[pb.Workload(name="web")]))
    assert not filter_matches(web, pb.FlowFilter(source_workload=[pb.Workload(kind="StatefulSet")]))
