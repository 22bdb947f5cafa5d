"""meshctl identities, policy and bpf: what each agent knows and has programmed."""
from __future__ import annotations

import json

import click
from google.protobuf import json_format

from agent.api.weft import agent_pb2, agent_pb2_grpc

from . import agents
from .output import ask_agents, print_table, report_failures

SERVER = click.option("--server", multiple=True, help="Agent address; default: every lab node's agent.")
OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")


def _call(method: str, request):
    def call(address: str):
        with agents.channel(address) as ch:
            return getattr(agent_pb2_grpc.AgentStub(ch), method)(request, timeout=5)
    return call


def _json(results: dict) -> None:
    click.echo(json.dumps({node: json_format.MessageToDict(r) for node, r in results.items()}, indent=2))


@click.command()
@SERVER
@OUTPUT
def identities(server, output):
    """Security identities: reserved, one per workload label set, one per ipBlock prefix."""
    results, failed = ask_agents(server, _call("Identities", agent_pb2.IdentitiesRequest()))
    if output == "json":
        _json(results)
    else:
        rows = [["NODE", "ID", "KIND", "LABELS", "PODS"]]
        for node, resp in results.items():
            for ident in resp.identities:
                rows.append([node, ident.id, ident.kind, " ".join(ident.labels), " ".join(ident.pods)])
        print_table(rows)
    report_failures(results, failed)


@click.command()
@SERVER
@click.option("--pod", default="", help="Only this local pod (NAMESPACE/NAME).")
@OUTPUT
def policy(server, pod, output):
    """Per local endpoint: isolation, and the NetworkPolicy allow rules in force."""
    results, failed = ask_agents(server, _call("Policy", agent_pb2.PolicyRequest(pod=pod)))
    if output == "json":
        _json(results)
        report_failures(results, failed)
        return
    for node, resp in results.items():
        for ep in resp.endpoints:
            ways = [f"{way} isolated by {', '.join(by)}" for way, by in
                    (("ingress", ep.ingress_isolated_by), ("egress", ep.egress_isolated_by)) if by]
            state = "; ".join(ways) or "not isolated: all traffic allowed"
            click.echo(f"{node} {ep.namespace}/{ep.pod_name} (endpoint {ep.endpoint_id}, identity {ep.identity})"
                       f"{' AUDIT MODE' if ep.audit else ''}: {state}")
            if ep.rules:
                rows = [["", "DIRECTION", "PEER", "PROTOCOL", "PORTS", "ALLOWED BY"]]
                rows += [["", r.direction, f"{r.peer} ({r.peer_identity})", r.protocol, r.ports,
                          r.policy or "(the node itself)"] for r in ep.rules]
                print_table(rows)
        for error in resp.errors:
            click.echo(f"{node} not enforced: {error}")
    report_failures(results, failed)


@click.command()
@SERVER
@click.argument("map_name", required=False, default="")
@click.option("--limit", default=1000, show_default=True, help="At most this many entries per agent.")
@OUTPUT
def bpf(server, map_name, limit, output):
    """Dump one of the agent's BPF maps, decoded; without a name, list them."""
    results, failed = ask_agents(server, _call("BpfMap", agent_pb2.BpfMapRequest(name=map_name, limit=limit)))
    if output == "json":
        _json(results)
    elif not map_name:
        for node, resp in results.items():
            click.echo(f"{node}: {' '.join(resp.maps)}")
    else:
        rows = [["NODE", "KEY", "VALUE"]]
        for node, resp in results.items():
            rows += [[node, e.key, e.value] for e in resp.entries]
            if resp.truncated:
                rows.append([node, "...", f"more than {limit} entries: raise --limit"])
        print_table(rows)
    report_failures(results, failed)
