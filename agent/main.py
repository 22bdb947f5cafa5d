"""mesh-agent: the Weft node agent (contract: see DESIGN.md)."""
from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path

import click

from .datapath import abi
from .datapath.errors import DatapathError
from .datapath.loader import DatapathConfig
from .datapath.node_config import DEFAULT_REPORT_FLAGS, parse_tcp_flags


def _tcp_flags(ctx, param, value: str) -> str:
    try:
        parse_tcp_flags(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--node-name", required=True, help="This node's name, as Kubernetes knows it.")
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path),
              help="Read cluster state from this directory of YAML manifests.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              help="Watch the Kubernetes API with this kubeconfig.")
@click.option("--in-cluster", is_flag=True, help="Watch the Kubernetes API from inside a pod.")
@click.option("--listen", default=None,
              help="gRPC address: unix:///path or host:port [unix:///var/run/weft/<node>/agent.sock].")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With a TCP --listen: serve TLS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The private key of --tls-cert (PEM).")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--pin-root", type=click.Path(path_type=Path), default=abi.PIN_ROOT, show_default=True,
              help="bpffs directory under which <node>/v<abi>/ holds the pinned maps.")
@click.option("--ct-map-size", default=65536, show_default=True, help="Conntrack entries.")
@click.option("--ct-map-lru", type=click.Choice(["common", "per-cpu"]), default="common", show_default=True,
              help="The conntrack table's LRU lists: one shared by all CPUs (any CPU may use the whole "
              "table), or one per CPU (a steadier connect() tail under connection churn, but each CPU "
              "evicts within its own share: --ct-map-size / possible CPUs).")
@click.option("--endpoint-map-size", default=1024, show_default=True, help="Local endpoints.")
@click.option("--flow-ring-pages", default=256, show_default=True,
              help="Pages of the kernel flow ring buffer (a power of two).")
@click.option("--monitor-aggregation", type=click.Choice(["none", "medium", "maximum", "off"]), default="medium",
              show_default=True, help="Which packets become flows: every one; new connections, first-seen "
              "TCP flags and a periodic report; new connections only; or none. Drops always.")
@click.option("--monitor-aggregation-interval", "monitor_interval", default=5, show_default=True,
              type=click.IntRange(1, 3600), help="Seconds between reports of one connection (medium).")
@click.option("--monitor-aggregation-flags", "monitor_flags", default=DEFAULT_REPORT_FLAGS, show_default=True,
              callback=_tcp_flags, help="TCP flags whose first sighting each way is reported (medium): "
              "a comma-separated list of syn, fin, rst, psh, ack, urg, ece, cwr; or all, or none.")
@click.option("--metrics-address", default="127.0.0.1:9962", show_default=True,
              help="Where /metrics listens (host:port; loopback by default); empty to disable.")
@click.option("--uplink", "uplinks", multiple=True,
              help="An interface where traffic from outside arrives (NodePort, external IPs); repeatable.")
@click.option("--socket-lb-cgroup", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A cgroup v2 directory (the hierarchy's root on a node: /sys/fs/cgroup; on a hybrid "
                   "host its unified/ is taken): its processes' TCP connections to "
                   "Services get their backend at connect(), and are never translated per packet. "
                   "Unset: every Service connection is translated per packet.")
@click.option("--host-routing", type=click.Choice(["bpf", "legacy"]), default="bpf", show_default=True,
              help="bpf: packets to local pods, and to native-routed peers, are forwarded by the datapath "
                   "(bpf_redirect_peer / bpf_fib_lookup), past the node's IP stack and netfilter; "
                   "legacy: the node's stack routes every packet.")
@click.option("--ipv4-native-routing-cidr", "native_routing_cidr", default="",
              help="Addresses pods reach without NAT by the node (the cluster's pod and node network), "
                   "e.g. 10.0.0.0/8. Host routing forwards traffic with them both ways; traffic with "
                   "other addresses keeps the node's stack (its masquerading and firewall).")
@click.option("--lb-algorithm", type=click.Choice(["random", "maglev"]), default="random", show_default=True,
              help="Backend selection for Services without a weft.io/lb-algorithm annotation.")
@click.option("--maglev-table-size", default=1021, show_default=True,
              help="Entries of each Maglev table (a prime, about 100 x the backends of a Service).")
@click.option("--lb-service-map-size", default=65536, show_default=True, help="Service frontends.")
@click.option("--lb-backend-map-size", default=65536, show_default=True, help="Service backends.")
@click.option("--lb-slot-map-size", default=262144, show_default=True, help="Backend slots, all Services.")
@click.option("--lb-maglev-map-size", default=262144, show_default=True,
              help="Maglev entries, all Services (table size x Maglev frontends).")
@click.option("--lb-affinity-map-size", default=65536, show_default=True, help="Session affinity entries.")
@click.option("--ipcache-map-size", default=131072, show_default=True,
              help="IP->identity entries (pods cluster-wide, nodes, ipBlock prefixes).")
@click.option("--policy-map-size", default=262144, show_default=True,
              help="Policy allow entries, all local endpoints.")
@click.option("--policy-audit-mode", is_flag=True,
              help="Report what NetworkPolicy would drop (verdict AUDIT) but let it pass; per namespace, "
              "annotate it policy.weft.dev/audit-mode=true.")
@click.option("--identity-file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/var/lib/weft/identities.json"), show_default=True,
              help="With --manifests: where security identities are allocated (agents sharing the file "
              "agree on every number).")
@click.option("--identity-gc-grace-period", default=300.0, show_default=True, type=click.FloatRange(1),
              help="With the Kubernetes API: seconds an identity must go unused before it is deleted.")
@click.option("--export-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write flows to this file as JSON lines (one GetFlowsResponse each), rotated by size.")
@click.option("--export-file-max-size-mb", default=10.0, show_default=True, help="Rotate the export file at this size.")
@click.option("--export-file-max-backups", default=5, show_default=True, help="Rotated export files kept.")
@click.option("--export-allowlist", default="", help='FlowFilters in JSON, e.g. \'{"verdict":["DROPPED"]}\': '
              "export only the flows one of them matches.")
@click.option("--export-denylist", default="", help="FlowFilters in JSON: never export the flows one of them matches.")
@click.option("--flow-buffer", default=4095, show_default=True, help="Recent flows kept in memory.")
@click.option("--poll-interval", default=0.2, show_default=True,
              help="Longest wait in seconds between two looks at the source; a change it reports wakes the agent at once.")
@click.option("--cleanup-on-exit", is_flag=True,
              help="On exit detach programs and remove pins (default: leave the datapath running).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(node_name, manifests, kubeconfig, in_cluster, listen, tls_cert, tls_key, tls_client_ca, pin_root, ct_map_size,
         ct_map_lru, endpoint_map_size, flow_ring_pages, monitor_aggregation, monitor_interval, monitor_flags, metrics_address, uplinks, lb_algorithm, maglev_table_size, lb_service_map_size,
         lb_backend_map_size, lb_slot_map_size, lb_maglev_map_size, lb_affinity_map_size,
         ipcache_map_size, policy_map_size, policy_audit_mode, identity_file, identity_gc_grace_period, export_file,
         export_file_max_size_mb, export_file_max_backups, export_allowlist, export_denylist, flow_buffer, poll_interval, cleanup_on_exit, socket_lb_cgroup,
         host_routing, native_routing_cidr, log_level):
    """Run the Weft datapath agent on one node."""
    logging.basicConfig(level=log_level.upper(),
                        format=f"%(asctime)s {node_name} %(levelname)s %(name)s: %(message)s")
    sources = [s for s in (manifests, kubeconfig, in_cluster) if s]
    if len(sources) != 1:
        raise click.UsageError("give exactly one source: --manifests DIR, --kubeconfig PATH or --in-cluster")
    from .daemon import Agent, AgentOptions
    from .model.maglev import is_prime
    from .observe.exporter import FileExporter, parse_filters

    tls = None
    if tls_cert or tls_key or tls_client_ca:
        if not (tls_cert and tls_key):
            raise click.UsageError("TLS needs both --tls-cert and --tls-key")
        if not listen or listen.startswith("unix://"):
            raise click.UsageError("TLS is for a TCP --listen (host:port); a unix socket is guarded by its mode")
        from .api.server import TLSConfig

        tls = TLSConfig(tls_cert, tls_key, tls_client_ca)
    exporter = None
    if export_file:
        filters = {}
        for hint, text in (("--export-allowlist", export_allowlist), ("--export-denylist", export_denylist)):
            try:
                filters[hint] = parse_filters(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=hint) from None
        exporter = FileExporter(export_file, export_file_max_size_mb, export_file_max_backups,
                                filters["--export-allowlist"], filters["--export-denylist"])

    if not is_prime(maglev_table_size):
        raise click.BadParameter(f"{maglev_table_size} is not prime", param_hint="--maglev-table-size")

    if socket_lb_cgroup is not None and not (socket_lb_cgroup / "cgroup.controllers").exists():
        if (socket_lb_cgroup / "unified" / "cgroup.controllers").exists():
            socket_lb_cgroup = socket_lb_cgroup / "unified"  # a hybrid host: v2 is mounted there
        else:
            raise click.BadParameter(f"{socket_lb_cgroup} is not a cgroup v2 directory (it has no "
                                     "cgroup.controllers)", param_hint="--socket-lb-cgroup")

    native_routing = None
    if native_routing_cidr:
        try:
            native_routing = ipaddress.IPv4Network(native_routing_cidr)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--ipv4-native-routing-cidr") from None

    options = AgentOptions(
        node_name=node_name,
        manifests=manifests,
        kubeconfig=kubeconfig,
        in_cluster=in_cluster,
        listen=listen or f"unix:///var/run/weft/{node_name}/agent.sock",
        datapath=DatapathConfig(node=node_name, pin_root=pin_root, ct_map_size=ct_map_size,
                                ct_map_per_cpu_lru=ct_map_lru == "per-cpu",
                                endpoint_map_size=endpoint_map_size, flow_ring_pages=flow_ring_pages,
                                lb_services=lb_service_map_size, lb_backends=lb_backend_map_size,
                                lb_slots=lb_slot_map_size, lb_maglev=lb_maglev_map_size,
                                lb_affinity=lb_affinity_map_size, maglev_table_size=maglev_table_size,
                                ipcache_map_size=ipcache_map_size, policy_map_size=policy_map_size,
                                host_routing=host_routing == "bpf", native_routing_cidr=native_routing),
        flow_buffer=flow_buffer,
        poll_interval=poll_interval,
        cleanup_on_exit=cleanup_on_exit,
        lb_algorithm=lb_algorithm,
        uplinks=tuple(uplinks),
        metrics_address=metrics_address,
        monitor_aggregation=monitor_aggregation,
        monitor_interval=monitor_interval,
        monitor_flags=monitor_flags,
        policy_audit=policy_audit_mode,
        identity_file=identity_file,
        identity_gc_grace=identity_gc_grace_period,
        exporter=exporter,
        tls=tls,
        socket_lb_cgroup=socket_lb_cgroup,
    )
    try:
        sys.exit(Agent(options).run())
    except DatapathError as exc:
        logging.getLogger("weft.agent").error("%s", exc)
        click.echo(f"mesh-agent: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
