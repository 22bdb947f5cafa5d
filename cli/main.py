"""meshctl: operate Weft (contract: see DESIGN.md)."""
from __future__ import annotations

import json

import click
import grpc
from google.protobuf import json_format

from . import agents
from .flows import flows
from .lab.commands import lab


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Weft: an eBPF data plane for Kubernetes nodes."""


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
        for err in st.get("errors", []):
            click.echo(f"  problem: {err}")


main.add_command(lab)
main.add_command(flows)

if __name__ == "__main__":
    main()
