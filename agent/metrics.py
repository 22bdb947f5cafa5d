"""Prometheus metrics of the agent, served on loopback by default.

Datapath counters live in per-CPU BPF arrays and are read and summed at scrape
time, so the datapath pays nothing for exporting them.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.core import CounterMetricFamily

from .api.flow import flow_pb2

log = logging.getLogger(__name__)

DIRECTIONS = {1: "ingress", 2: "egress"}
POLICY_VERDICTS = {0: "allowed", 1: "denied", 2: "audit"}  # enum policy_verdict


def reason_name(reason: int) -> str:
    if reason == 0:
        return "forwarded"
    try:
        return flow_pb2.DropReason.Name(reason).lower()
    except ValueError:
        return f"reason_{reason}"


class DatapathCollector:
    """weft_datapath_{packets,bytes}_total by direction and reason, lost flow events, policy
    verdicts and socket-level translations."""

    def __init__(self, programs):
        self.counters = programs.table("weft_metrics")
        self.lost = programs.table("weft_flow_lost")
        self.policy_verdicts = programs.table("weft_policy_verdicts")
        self.socket_translations = programs.table("weft_sock_lb_translations")

    def collect(self):
        packets = CounterMetricFamily("weft_datapath_packets", "Packets the datapath forwarded or dropped",
                                      labels=["direction", "reason"])
        octets = CounterMetricFamily("weft_datapath_bytes", "Bytes the datapath forwarded or dropped",
                                     labels=["direction", "reason"])
        for key, per_cpu in self.counters.items():
            total_packets = sum(v.packets for v in per_cpu)
            if not total_packets:
                continue
            labels = [DIRECTIONS.get(key.value & 3, "unknown"), reason_name(key.value >> 2)]
            packets.add_metric(labels, total_packets)
            octets.add_metric(labels, sum(v.bytes for v in per_cpu))
        yield packets
        yield octets
        lost = CounterMetricFamily("weft_flow_events_lost", "Flow events the kernel could not queue "
                                   "(ring buffer full)")
        lost.add_metric([], sum(self.lost[self.lost.Key(0)]))
        yield lost
        verdicts = CounterMetricFamily("weft_policy_verdicts", "Packets NetworkPolicy judged at isolated "
                                       "endpoints, by direction and verdict", labels=["direction", "verdict"])
        for key, per_cpu in self.policy_verdicts.items():
            total = sum(per_cpu)
            if total:
                verdicts.add_metric([DIRECTIONS.get(key.value & 3, "unknown"),
                                     POLICY_VERDICTS.get(key.value >> 2, "unknown")], total)
        yield verdicts
        yield CounterMetricFamily("weft_socket_lb_translations", "TCP connections to a Service given their "
                                  "backend at connect() (--socket-lb-cgroup), never translated per packet",
                                  value=sum(self.socket_translations[self.socket_translations.Key(0)]))


class FlowCollector:
    """weft_flows_processed_total: flow events the agent drained, by verdict and type,
    and weft_flow_events_undecodable_total, from the reader's and the store's counts
    (kept as plain integers: the drain path stays cheap)."""

    def __init__(self, reader):
        self.reader = reader

    def collect(self):
        flows = CounterMetricFamily("weft_flows_processed", "Flow events the agent drained from the datapath, "
                                    "by verdict and type", labels=["verdict", "type"])
        for verdict, count in enumerate(list(self.reader.by_verdict)):
            if count:
                try:
                    name = flow_pb2.Verdict.Name(verdict).lower()
                except ValueError:
                    name = f"verdict_{verdict}"
                flows.add_metric([name, "drop" if verdict == flow_pb2.DROPPED else "trace"], count)
        yield flows
        yield CounterMetricFamily("weft_flow_events_undecodable", "Flow events drained but not readable as "
                                  "a flow (a record of the wrong size, a decoding failure)",
                                  value=self.reader.store.decode_errors)


class AgentMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.map_errors = Counter("weft_bpf_map_errors", "Map writes that failed, by map and reason",
                                  ["map_name", "reason"], registry=self.registry)
        self.frontends = Gauge("weft_service_frontends", "Service frontends programmed, by scope",
                               ["scope"], registry=self.registry)
        self.endpoints = Gauge("weft_endpoints", "Local endpoints programmed", registry=self.registry)
        self.identities = Gauge("weft_identities", "Security identities of pods this node knows",
                                registry=self.registry)
        self.policy_entries = Gauge("weft_policy_entries", "Policy allow entries written, all local endpoints",
                                    registry=self.registry)
        self.isolated_endpoints = Gauge("weft_policy_isolated_endpoints",
                                        "Local endpoints NetworkPolicy isolates, by direction", ["direction"],
                                        registry=self.registry)
        self.map_entries = Gauge("weft_bpf_map_entries", "Entries the agent keeps in a BPF map",
                                 ["map_name"], registry=self.registry)
        self.map_size = Gauge("weft_bpf_map_size", "Capacity of a BPF map (entries)", ["map_name"],
                              registry=self.registry)
        self.sync_seconds = Histogram("weft_datapath_sync_duration_seconds",
                                      "From a change read from the source to the datapath programmed",
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                      registry=self.registry)
        self.policy_errors = Gauge("weft_policy_invalid", "NetworkPolicies rejected as invalid",
                                   registry=self.registry)
        self.conntrack = Gauge("weft_conntrack_entries", "Live conntrack entries at the last GC sweep",
                               registry=self.registry)
        self.conntrack_gc = Counter("weft_conntrack_gc_deleted", "Expired conntrack entries deleted",
                                    registry=self.registry)

    def watch_flows(self, reader) -> None:
        self.registry.register(FlowCollector(reader))

    def watch_datapath(self, programs) -> None:
        self.registry.register(DatapathCollector(programs))

    def serve(self, address: str, healthy: Callable[[], str] = lambda: "") -> None:
        """/metrics, and /healthz: 200 when `healthy()` says nothing is wrong, else 503
        with what it says (the DaemonSet's readiness probe)."""
        host, _, port = address.rpartition(":")
        metrics_app = make_wsgi_app(self.registry)

        def app(environ, start_response):
            if environ.get("PATH_INFO") == "/healthz":
                problem = healthy()
                start_response("503 Service Unavailable" if problem else "200 OK",
                               [("Content-Type", "text/plain")])
                return [(problem or "ok").encode() + b"\n"]
            return metrics_app(environ, start_response)

        server = make_server(host or "127.0.0.1", int(port), app, ThreadingWSGIServer,
                             handler_class=_SilentHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics on http://%s/metrics, health on /healthz", address)
