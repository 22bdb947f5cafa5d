"""meshctl: operate Weft (contract: see DESIGN.md)."""
from __future__ import annotations

import json
from pathlib import Path

import click
import grpc
from google.protobuf import json_format

from . import agents, views
from .output import ask_agents, print_table, report_failures
from .flows import flows
from .lab.commands import lab


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Reach agents on TCP addresses over TLS, trusting this CA (PEM).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A client certificate, for agents that require one.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The private key of --tls-cert.")
@click.option("--tls-server-name", default="", help="The name to expect in the agent's certificate.")
def main(tls_ca, tls_cert, tls_key, tls_server_name):
    """Weft: an eBPF data plane for Kubernetes nodes."""
    if (tls_cert or tls_key or tls_server_name) and not tls_ca:
        raise click.UsageError("--tls-cert, --tls-key and --tls-server-name go with --tls-ca")
    agents.TLS = agents.ClientTLS(tls_ca, tls_cert, tls_key, tls_server_name)


@main.command()
@click.option("--server", multiple=True, help="Agent address; default: every lab node's agent.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status(server, output):
    """Agent health: datapath loaded, endpoints programmed, problems."""
    targets = agents.addresses(server)
    if not targets:
        raise click.ClickException("no agent found: start a lab (`meshctl lab up`) or pass --server")
    results = {}
    for name, address in targets.items():
        try:
            results[name] = json_format.MessageToDict(agents.status(address))
        except grpc.RpcError as exc:
            results[name] = {"error": f"unreachable at {address}: {exc.code().name}"}
    if output == "json":
        click.echo(json.dumps(results, indent=2))
        return
    for name, st in results.items():
        if "error" in st:
            click.echo(f"{name}: {st['error']}")
            continue
        eps = st.get("endpoints", [])
        attached = sum(1 for e in eps if e.get("attached"))
        click.echo(f"{name}: {'ready' if st.get('ready') else 'starting'}, "
                   f"{attached}/{len(eps)} endpoints attached, generation {st.get('syncedGeneration', 0)}, "
                   f"pins {st.get('pinDir', '')}")
        for e in eps:
            click.echo(f"  endpoint {e.get('id')}: {e.get('namespace')}/{e.get('podName')} {e.get('ipv4')} "
                       f"on {e.get('interface')}{'' if e.get('attached') else ' (not attached)'}")
        for feature in st.get("features", []):
            click.echo(f"  kernel: {feature}")
        for program in st.get("programs", []):
            click.echo(f"  program: {program}")
        for m in st.get("maps", []):
            entries, size = int(m.get("entries", 0)), int(m.get("maxEntries", 0))
            click.echo(f"  map {m['name']}: {entries}/{size} ({100 * entries / size if size else 0:.1f}% full)")
        for err in st.get("errors", []):
            click.echo(f"  problem: {err}")


@main.command()
@click.option("--server", multiple=True, help="Agent address; default: every lab node's agent.")
@click.option("--namespace", help="Only Services of this namespace.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def services(server, namespace, output):
    """Service frontends each agent has programmed, with their backends."""
    answers, failed = ask_agents(server, agents.services)
    results = {node: [f for f in resp.frontends if not namespace or f.namespace == namespace]
               for node, resp in answers.items()}
    if output == "json":
        click.echo(json.dumps({n: [json_format.MessageToDict(f) for f in fs] for n, fs in results.items()},
                              indent=2))
    else:
        rows = [["NODE", "SERVICE", "FRONTEND", "SCOPE", "BACKENDS", "ALGORITHM", "STATE"]]
        for node, frontends in results.items():
            for f in frontends:
                backends = ",".join(f"{b.ip}:{b.port}{'*' if b.local else ''}" for b in f.backends) or "<none: rejected>"
                extra = f"{f.algorithm}" + (f", affinity {f.affinity_timeout_seconds}s" if f.affinity_timeout_seconds else "")
                rows.append([node, f"{f.namespace}/{f.name}:{f.port_name or f.port}", f"{f.ip}:{f.port}/{f.protocol}",
                             f.scope, backends, extra, "programmed" if f.programmed else "NOT PROGRAMMED"])
        if len(rows) == 1:
            click.echo("No services found.")
        else:
            print_table(rows)
            click.echo("(* a backend on that node)")
    report_failures(results, failed)


main.add_command(lab)
main.add_command(flows)
main.add_command(views.identities)
main.add_command(views.policy)
main.add_command(views.bpf)

if __name__ == "__main__":
    main()
