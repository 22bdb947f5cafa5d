"""`meshctl flows`: flows from one agent, or every lab node's merged in time order.

Filter flags follow `hubble observe`: kinds are ANDed, repeated values of one
kind ORed; flags without from/to (--pod, --ip, --namespace, --label, --port)
match either side.
"""
from __future__ import annotations

import json
import queue
import re
import sys
import threading
from datetime import datetime, timedelta, timezone

import click
import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api import drop_reasons
from agent.api.flow import flow_pb2 as pb
from agent.api.observer import observer_pb2

from . import agents

VERDICTS = [v for v in pb.Verdict.keys() if v != "VERDICT_UNKNOWN"]
DROP_REASONS = [r for r in pb.DropReason.keys() if r != "DROP_REASON_UNKNOWN"]
EVENT_TYPES = {"drop": 1, "trace": 4}  # Cilium's monitor message types
OBS_POINT = {pb.TO_ENDPOINT: "to-endpoint", pb.FROM_ENDPOINT: "from-endpoint", pb.TO_STACK: "to-stack",
             pb.FROM_NETWORK: "from-network", pb.TO_NETWORK: "to-network", pb.FROM_HOST: "from-host"}


def parse_time(value: str) -> Timestamp:
    """An RFC 3339 time, or a duration before now such as 30s, 5m, 2h."""
    ts = Timestamp()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h|d)", value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        ts.FromDatetime(datetime.now(timezone.utc) - timedelta(**{unit: float(match.group(1))}))
        return ts
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a time (RFC 3339) nor a duration like 5m")
    ts.FromDatetime(when if when.tzinfo else when.astimezone(timezone.utc))
    return ts


def build_filters(opts: dict) -> list[pb.FlowFilter]:
    base = pb.FlowFilter()
    base.verdict.extend(pb.Verdict.Value(v.upper()) for v in opts["verdict"])
    base.protocol.extend(p.lower() for p in opts["protocol"])
    base.node_name.extend(opts["node"])
    base.source_pod.extend(_pod_ref(p) for p in opts["from_pod"])
    base.destination_pod.extend(_pod_ref(p) for p in opts["to_pod"])
    base.source_ip.extend(opts["from_ip"])
    base.destination_ip.extend(opts["to_ip"])
    base.source_label.extend(opts["from_label"])
    base.destination_label.extend(opts["to_label"])
    base.drop_reason_desc.extend(pb.DropReason.Value(r.upper()) for r in opts.get("drop_reason_desc") or ())
    base.traffic_direction.extend(pb.TrafficDirection.Value(d.upper()) for d in opts.get("traffic_direction") or ())
    base.event_type.extend(pb.EventTypeFilter(type=EVENT_TYPES[t]) for t in opts.get("type") or ())
    for flags in opts.get("tcp_flags") or ():
        base.tcp_flags.add(**{name.strip().upper(): True for name in flags.split(",")})
    filters = [base]
    either = [
        ("source_pod", "destination_pod", [_pod_ref(p) for p in opts["pod"]]
         + [f"{ns}/" for ns in opts["namespace"]]),
        ("source_ip", "destination_ip", list(opts["ip"])),
        ("source_service", "destination_service", [_pod_ref(s) for s in opts["service"]]),
        ("source_label", "destination_label", list(opts["label"])),
        ("source_port", "destination_port", [str(p) for p in opts["port"]]),
    ]
    for src_field, dst_field, values in either:
        if not values:
            continue
        expanded = []
        for f in filters:
            for field in (src_field, dst_field):
                g = pb.FlowFilter()
                g.CopyFrom(f)
                getattr(g, field).extend(values)
                expanded.append(g)
        filters = expanded
    return [f for f in filters if f.ListFields()]


def _pod_ref(value: str) -> str:
    return value if "/" in value else f"default/{value}"


def _endpoint(ep: pb.Endpoint, ip: str, port: int | None) -> str:
    name = f"{ep.namespace}/{ep.pod_name}" if ep.pod_name else ip
    where = f"{name}:{port}" if port else name
    if not ep.pod_name and ep.labels:
        where += f" ({ep.labels[0].split(':', 1)[-1]})"
    return where


def _ports(flow: pb.Flow) -> tuple[int | None, int | None]:
    kind = flow.l4.WhichOneof("protocol")
    if kind in ("TCP", "UDP"):
        l4 = getattr(flow.l4, kind)
        return l4.source_port, l4.destination_port
    return None, None


def summary(flow: pb.Flow) -> str:
    kind = flow.l4.WhichOneof("protocol")
    if kind == "TCP":
        flags = [f.name for f in pb.TCPFlags.DESCRIPTOR.fields if getattr(flow.l4.TCP.flags, f.name)]
        return f"TCP Flags: {', '.join(flags)}" if flags else "TCP"
    if kind == "ICMPv4":
        return f"ICMPv4 type {flow.l4.ICMPv4.type} code {flow.l4.ICMPv4.code}"
    return kind or "IPv4"


def policy_note(flow: pb.Flow) -> str:
    """Which NetworkPolicy decided: the one that allowed the flow, or, for a
    policy drop, that the pod is isolated by some and none allows it."""
    def names(policies) -> str:
        return ", ".join(f"{p.namespace}/{p.name}" for p in policies)
    for way, allowed in (("egress", flow.egress_allowed_by), ("ingress", flow.ingress_allowed_by)):
        if allowed:
            return f" [{way} allowed by {names(allowed)}]"
    for way, isolating in (("egress", flow.egress_denied_by), ("ingress", flow.ingress_denied_by)):
        if isolating:
            return f" [{way} isolated by {names(isolating)}; none allows it]"
    return ""


def _when(ts: Timestamp) -> str:
    dt = ts.ToDatetime(tzinfo=timezone.utc).astimezone()
    return dt.strftime("%b %d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def compact(resp: observer_pb2.GetFlowsResponse) -> str:
    if resp.HasField("lost_events"):
        lost = resp.lost_events
        return (f"{_when(resp.time)} [{resp.node_name}]: EVENTS LOST: "
                f"{pb.LostEventSource.Name(lost.source)} {lost.num_events_lost}")
    f = resp.flow
    sport, dport = _ports(f)
    left, right = _endpoint(f.source, f.IP.source, sport), _endpoint(f.destination, f.IP.destination, dport)
    arrow = "->"
    if f.is_reply.value:  # as hubble: the connection's opener stays on the left
        left, right, arrow = right, left, "<-"
    what = pb.Verdict.Name(f.verdict)
    if f.verdict in (pb.DROPPED, pb.AUDIT):
        what = f"{drop_reasons.describe(f.drop_reason_desc)} {what}"
    point = OBS_POINT.get(f.trace_observation_point, "")
    service = (f" [service {f.destination_service.namespace}/{f.destination_service.name}]"
               if f.destination_service.name else "")
    return (f"{_when(f.time)} [{f.node_name}]: {left} {arrow} {right}{service} "
            f"{point + ' ' if point else ''}{what} ({summary(f)}){policy_note(f)}")


def as_json(resp: observer_pb2.GetFlowsResponse) -> str:
    return json.dumps(json_format.MessageToDict(resp), separators=(",", ":"))


TABLE_HEADER = ("TIMESTAMP", "NODE", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")


def table_row(resp: observer_pb2.GetFlowsResponse) -> tuple:
    if resp.HasField("lost_events"):
        return (_when(resp.time), resp.node_name, "", "", "lost-events", "",
                f"{resp.lost_events.num_events_lost} lost")
    f = resp.flow
    sport, dport = _ports(f)
    return (_when(f.time), f.node_name, _endpoint(f.source, f.IP.source, sport),
            _endpoint(f.destination, f.IP.destination, dport),
            OBS_POINT.get(f.trace_observation_point, "drop" if f.verdict == pb.DROPPED else ""),
            pb.Verdict.Name(f.verdict) + (f" ({drop_reasons.describe(f.drop_reason_desc)})"
                                          if f.drop_reason_desc else ""), summary(f))


def _stream(name: str, address: str, request, out: queue.Queue) -> None:
    try:
        with agents.channel(address) as ch:
            for resp in agents.observer(ch).GetFlows(request):
                out.put((name, resp))
    except grpc.RpcError as exc:
        out.put((name, exc))
    finally:
        out.put((name, None))


def _say_if_since_is_beyond_the_buffer(targets: dict[str, str], since_ns: int, failed: list[str]) -> None:
    """--since older than what an agent still holds is best effort: say so, per agent."""
    for name, address in targets.items():
        if any(line.startswith(f"{name}:") for line in failed):
            continue
        try:
            oldest, overwritten = agents.ring_window(address)
        except grpc.RpcError:
            continue
        if overwritten and oldest is not None and oldest > since_ns:
            start = Timestamp()
            start.FromNanoseconds(oldest)
            click.echo(f"meshctl: {name} holds flows from {_when(start)} on ({overwritten} older flows were "
                       f"overwritten): --since is best effort beyond that", err=True)


FILTER_OPTIONS = ("--namespace", "--pod", "--from-pod", "--to-pod", "--label", "--from-label", "--to-label",
                  "--service", "--verdict", "--protocol", "--port", "--from-ip", "--to-ip", "--ip", "--node",
                  "--drop-reason-desc", "--traffic-direction", "--type", "-t", "--tcp-flags")


class FlowsCommand(click.Command):
    """`--not` negates the filter that follows it, as in `hubble observe`: the
    negated filters go to the request's blacklist."""

    def parse_args(self, ctx, args):
        kept, negated, i = [], [], 0
        while i < len(args):
            if args[i] == "--not":
                if i + 1 >= len(args) or args[i + 1].split("=", 1)[0] not in FILTER_OPTIONS:
                    raise click.UsageError("--not must be followed by a filter, e.g. --not --pod NS/POD", ctx)
                takes = 1 if "=" in args[i + 1] else 2
                negated.extend(args[i + 1:i + 1 + takes])
                i += 1 + takes
                continue
            kept.append(args[i])
            i += 1
        ctx.meta["weft.negated"] = negated
        return super().parse_args(ctx, kept)


def negated_filters(ctx) -> list[pb.FlowFilter]:
    args = ctx.meta.get("weft.negated") or []
    if not args:
        return []
    sub = flows.make_context("flows --not", list(args), parent=ctx)
    return build_filters(sub.params)


@click.command(cls=FlowsCommand)
@click.option("--not", "negate", is_flag=True, help="Negate the filter that follows (hubble's --not).")
@click.option("--server", multiple=True, help="Agent address (unix:///path or host:port); "
              "default: every lab node's agent, else this machine's.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new flows until interrupted.")
@click.option("--last", type=int, default=None, help="The last N flows [20; all with --since].")
@click.option("--since", help="Flows since this time or duration ago (5m).")
@click.option("--until", help="Flows until this time or duration ago.")
@click.option("--namespace", multiple=True, help="Either side in this namespace.")
@click.option("--pod", multiple=True, help="Either side is this [NS/]POD (a name prefix).")
@click.option("--from-pod", multiple=True)
@click.option("--to-pod", multiple=True)
@click.option("--label", multiple=True, help="Either side has labels K=V.")
@click.option("--from-label", multiple=True)
@click.option("--to-label", multiple=True)
@click.option("--service", multiple=True, help="Either side is this Service NS/NAME.")
@click.option("--verdict", multiple=True, type=click.Choice(VERDICTS, case_sensitive=False))
@click.option("--drop-reason-desc", multiple=True, type=click.Choice(DROP_REASONS, case_sensitive=False),
              help="Drops for this reason (POLICY_DENIED, ...).")
@click.option("--traffic-direction", multiple=True, type=click.Choice(["ingress", "egress"], case_sensitive=False))
@click.option("-t", "--type", multiple=True, type=click.Choice(list(EVENT_TYPES)), help="Event type.")
@click.option("--tcp-flags", multiple=True, help="TCP flags all set, e.g. SYN or SYN,ACK.")
@click.option("--protocol", multiple=True, help="tcp, udp, icmpv4")
@click.option("--port", multiple=True, type=int, help="Either side's L4 port.")
@click.option("--from-ip", multiple=True)
@click.option("--to-ip", multiple=True)
@click.option("--ip", multiple=True, help="Either side's IP or CIDR.")
@click.option("--node", multiple=True, help="Flows observed on this node (glob).")
@click.option("-o", "--output", type=click.Choice(["compact", "json", "table"]), default="compact")
@click.pass_context
def flows(ctx, server, follow, last, since, until, output, negate, **opts):
    """Observe flows: who talked to whom, and what the datapath did."""
    request = observer_pb2.GetFlowsRequest(follow=follow, whitelist=build_filters(opts),
                                           blacklist=negated_filters(ctx))
    if since:
        request.since.CopyFrom(parse_time(since))
    if until:
        request.until.CopyFrom(parse_time(until))
    number = last if last is not None else (0 if since or follow else 20)
    request.number = number
    targets = agents.addresses(server)
    if not targets:
        raise click.ClickException("no agent found: start a lab (`meshctl lab up`) or pass --server")
    out: queue.Queue = queue.Queue()
    for name, address in targets.items():
        threading.Thread(target=_stream, args=(name, address, request, out), daemon=True).start()
    render = {"compact": compact, "json": as_json, "table": table_row}[output]
    if output == "table":
        click.echo("\t".join(TABLE_HEADER))
    lost_total, failed, open_streams = 0, [], len(targets)
    buffered = []

    def emit(resp):
        nonlocal lost_total
        if resp.HasField("lost_events"):
            lost_total += resp.lost_events.num_events_lost
        line = render(resp)
        click.echo("\t".join(line) if output == "table" else line)

    try:
        while open_streams:
            name, item = out.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, grpc.RpcError):
                failed.append(f"{name}: {item.code().name} {item.details() or ''}".strip())
            elif follow:
                emit(item)  # live: in arrival order
            else:
                buffered.append(item)
    except KeyboardInterrupt:
        pass
    # history from several agents: merged in time order, like Hubble Relay
    merged = sorted(buffered, key=lambda r: r.time.ToNanoseconds())
    for resp in merged[-number:] if number else merged:
        emit(resp)
    if lost_total:
        click.echo(f"meshctl: {lost_total} flow events were lost before they reached you", err=True)
    if since:
        _say_if_since_is_beyond_the_buffer(targets, request.since.ToNanoseconds(), failed)
    for line in failed:
        click.echo(f"meshctl: agent {line}", err=True)
    if failed and len(failed) == len(targets):
        sys.exit(1)
