"""The agent's main loop: source -> model -> datapath, plus flows and the API.

The loop polls its source, applies the events to the model and reconciles the
datapath whenever anything changed, and every few seconds regardless (a pod
interface may appear after its manifest). The datapath outlives the agent:
stopping the agent leaves programs attached and maps pinned, so traffic keeps
flowing through a restart; --cleanup-on-exit removes both.
"""
from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from . import __version__
from .api import server as api_server
from .api import views
from .api.weft import agent_pb2
from .datapath import abi, cgroup, migrate, preflight, tc
from .datapath.conntrack import ConntrackGC
from .datapath.endpoints import EndpointManager
from .datapath.errors import DatapathError
from .datapath.lb_maps import LBMaps
from .datapath.loader import DatapathConfig, PodPrograms, unpin_node
from .datapath.node_config import NodeConfig
from .datapath.policy_maps import PolicyMaps
from .healthcheck import HealthChecks, wanted_from_plan
from .metrics import AgentMetrics
from .model import services
from .model.bulk import BULK, gc_paused_for
from .model.cluster import Cluster
from .model.identity import FileAllocator
from .model.policy import EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED, PolicyCompiler, PolicyState
from .observe.decode import FlowDecoder
from .observe.reader import FlowReader
from .observe.store import FlowStore
from .sources.manifests import ManifestDir

log = logging.getLogger("weft.agent")

RESYNC_S = 2.0


@dataclass
class AgentOptions:
    node_name: str
    manifests: Path | None
    listen: str
    datapath: DatapathConfig
    flow_buffer: int = 4095
    poll_interval: float = 0.2
    cleanup_on_exit: bool = False
    lb_algorithm: str = "random"
    uplinks: tuple[str, ...] = ()  # interfaces where traffic from outside arrives
    metrics_address: str = "127.0.0.1:9962"  # "" disables
    monitor_aggregation: str = "medium"
    monitor_interval: int = 5
    monitor_flags: str = "syn,fin,rst"  # validated by node_config.parse_tcp_flags
    policy_audit: bool = False
    identity_file: Path = Path("/var/lib/weft/identities.json")
    exporter: object | None = None  # observe.exporter.FileExporter
    tls: object | None = None  # api.server.TLSConfig, for a TCP listener
    kubeconfig: Path | None = None  # the Kubernetes API as the source, instead of manifests
    in_cluster: bool = False
    identity_gc_grace: float = 300.0  # with the API: unused identities are deleted after this
    # the cgroup whose processes' TCP connect() is load-balanced at the socket; None: per packet only
    socket_lb_cgroup: Path | None = None


SERVICE_KINDS = {"Service", "EndpointSlice"}


class Agent:
    def __init__(self, options: AgentOptions):
        self.options = options
        self.cluster = Cluster(options.node_name)
        self.source = self._source(options)
        self.metrics = AgentMetrics()
        self.store = FlowStore(options.node_name, options.flow_buffer)
        if options.exporter is not None:
            self.store.sinks.append(options.exporter)
        self.stopping = threading.Event()
        # set by the source at each change (and by a signal): the loop sleeps on it,
        # so a change is synced as it arrives and an idle agent wakes rarely
        self.wakeup = threading.Event()
        self.ready = False
        self.synced_generation = 0
        self.started = time.monotonic_ns()
        self.ipr = IPRoute()
        self._ifnames: dict[int, str] = {}
        self.planner = services.ServicePlanner(options.lb_algorithm)
        # with the API, identity numbers are agreed cluster-wide; with manifests, in a shared file
        self.identities = getattr(self.source, "identities", None) or FileAllocator(options.identity_file)
        self.policy_compiler = PolicyCompiler(self.identities, options.policy_audit)
        self.policy = PolicyState()
        self.policy_problems: list[str] = []  # why the last compilation could not be used
        self._health_checked: set = set()  # frontends with a health-check node port
        self.features: list[str] = []

    @staticmethod
    def _source(options: AgentOptions):
        if options.manifests is not None:
            return ManifestDir(options.manifests)
        from .sources import kubernetes

        return kubernetes.KubernetesSource(kubernetes.api_client(options.kubeconfig, options.in_cluster),
                                           gc_grace=options.identity_gc_grace)

    def ifname(self, ifindex: int) -> str:
        if ifindex not in self._ifnames:
            links = self.ipr.get_links(ifindex) if ifindex else []
            self._ifnames[ifindex] = links[0].get_attr("IFLA_IFNAME") if links else ""
        return self._ifnames[ifindex]

    def service_of(self, ip: str, port: int, protocol: str, external: bool = False):
        """The Service a frontend belongs to, for flow records."""
        scope = services.EXTERNAL if external else services.PODS
        sf = self.planner.plan.get(services.Frontend(ip, port, protocol, scope))
        return (sf.namespace, sf.name) if sf else None

    def services(self) -> agent_pb2.ServicesResponse:
        plan = dict(self.planner.plan)
        written = self.lb.written if self.ready else {}
        return agent_pb2.ServicesResponse(node_name=self.options.node_name, frontends=[
            agent_pb2.ServiceFrontend(
                namespace=sf.namespace, name=sf.name, port_name=sf.port_name, ip=fe.ip, port=fe.port,
                protocol=fe.protocol, scope=fe.scope, algorithm=sf.algorithm,
                affinity_timeout_seconds=sf.affinity_timeout, health_check_node_port=sf.health_check_port,
                backends=[agent_pb2.ServiceBackend(ip=b.ip, port=b.port, local=b.local) for b in sf.backends],
                programmed=fe in written and fe not in self.lb.stale)
            for fe, sf in sorted(plan.items())])

    def health_problem(self) -> str:
        """Why the agent is not ready to serve its node, or "" when it is."""
        if not self.ready:
            if not getattr(self.source, "ready", True):
                return "waiting for the first list of every kind: " + "; ".join(self.source.errors)
            return "datapath not programmed yet"
        return ""

    def map_fill(self) -> dict[str, tuple[int, int]]:
        """Entries the agent keeps in each map it writes, and the map's capacity as pinned."""
        size = self.programs.capacity
        return {"weft_endpoints": (len(self.endpoints.records), size("weft_endpoints")),
                "weft_lb4_services": (len(self.lb.written), size("weft_lb4_services")),
                "weft_lb4_backends": (len(self.lb.backend_ids), size("weft_lb4_backends")),
                "weft_lb4_frontend_addrs": (len(self.lb.addr_refs), size("weft_lb4_frontend_addrs")),
                "weft_ct": (self.ct_gc.live, size("weft_ct")),
                "weft_policy": (len(self.policy_maps.written_policy), size("weft_policy")),
                "weft_ipcache": (len(self.policy_maps.written_ipcache), size("weft_ipcache"))}

    def map_names(self) -> list[str]:
        """The datapath's maps, as pinned (the flow ring buffer is not a map to dump)."""
        return sorted(p.name for p in self.options.datapath.pin_dir.iterdir()
                      if p.name not in PodPrograms.SOCKET_STORAGE)

    def status(self) -> agent_pb2.StatusResponse:
        endpoints = [
            agent_pb2.Endpoint(
                id=ep.record.ep_id, namespace=ep.pod.namespace, pod_name=ep.pod.name,
                ipv4=ep.pod.ip, interface=ep.ifname, ifindex=ep.ifindex, attached=ep.attached,
            )
            for ep in sorted(self.endpoints.endpoints.values(), key=lambda e: e.pod.key)
        ] if self.ready else []
        errors = list(self.source.errors) + (
            list(self.endpoints.errors) + list(self.lb.errors) + list(self.health.errors)
            + self.policy.errors + self.policy_problems + self.policy_maps.errors if self.ready else [])
        return agent_pb2.StatusResponse(
            node_name=self.options.node_name, version=__version__, ready=self.ready,
            synced_generation=self.synced_generation, endpoints=endpoints, errors=errors,
            pin_dir=str(self.options.datapath.pin_dir),
            uptime_ns=time.monotonic_ns() - self.started,
            maps=[agent_pb2.MapFill(name=n, entries=e, max_entries=m) for n, (e, m) in self.map_fill().items()]
            if self.ready else [],
            features=self.features,
            programs=self._programs_attached() if self.ready else [],
        )

    def _programs_attached(self) -> list[str]:
        p = self.programs
        attached = sum(1 for e in self.endpoints.endpoints.values() if e.attached)
        out = [f"{p.FROM_POD}, {p.TO_POD}: TC ingress/egress on {attached} pod interfaces"]
        out += [f"{p.FROM_NETWORK}: TC ingress on {name}" for name in self.options.uplinks]
        if self.options.socket_lb_cgroup is not None:
            out.append(f"{', '.join(p.SOCKET_HOOKS)}: cgroup {self.options.socket_lb_cgroup}")
        return out

    def run(self) -> int:
        preflight.check_all()
        self.features = preflight.features()
        t0 = time.monotonic()
        self.programs = PodPrograms(self.options.datapath)
        log.info("datapath compiled and loaded in %.2fs; maps pinned in %s",
                 time.monotonic() - t0, self.options.datapath.pin_dir)
        for name, differences in self.programs.pins_unlike_config(self.map_names()).items():
            # its entries are live connections and Services: kept, as the map was made
            log.warning("%s keeps its pinned form (%s); it is made anew when the node's pins are "
                        "removed (--cleanup-on-exit) or at an ABI upgrade", name, "; ".join(differences))
        # an ABI upgrade: carry the previous version's entries into the new maps first
        self.migration = migrate.copy_from_previous(self.options.node_name, self.options.datapath.pin_root,
                                                    self._map_fd)
        self.endpoints = EndpointManager(self.programs, self.ipr)
        self.lb = LBMaps(self.programs)
        self.node_config = NodeConfig(self.programs, self.options.monitor_aggregation,
                                      self.options.monitor_interval, self.options.monitor_flags)
        self.ct_gc = ConntrackGC(self.programs)
        self.policy_maps = PolicyMaps(self.programs)
        self.health = HealthChecks()
        decoder = FlowDecoder(self.options.node_name, self.cluster, self.ifname, self.service_of,
                              lambda: self.policy)
        self.reader = FlowReader(self.programs.bpf, decoder, self.store)
        self.metrics.watch_datapath(self.programs)
        self.metrics.watch_flows(self.reader)
        if self.options.metrics_address:
            self.metrics.serve(self.options.metrics_address, self.health_problem)
        self.server = api_server.serve(self.options.listen, self.store, self.status, {
            "services": lambda request: self.services(),
            "identities": lambda request: views.identities(self.options.node_name, self.policy),
            "policy": lambda request: views.policy(self.options.node_name, self.policy,
                                                   self.endpoints.ep_ids(), request.pod),
            "bpf_map": lambda request: views.bpf_map(self.options.node_name, self.map_names(),
                                                     self.programs.table, request.name, request.limit),
        }, tls=self.options.tls)
        log.info("listening on %s", self.options.listen)
        self.reader.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: (self.stopping.set(), self.wakeup.set()))
        if hasattr(self.source, "watch"):
            self.source.watch(self.wakeup.set)
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _update_metrics(self) -> None:
        for writer in (self.lb, self.policy_maps):
            for exc in writer.failed_writes:
                self.metrics.map_errors.labels(getattr(exc, "map_name", "unknown"),
                                               getattr(exc, "reason", "error")).inc()
            writer.failed_writes.clear()
        for scope in (services.PODS, services.EXTERNAL):
            self.metrics.frontends.labels(scope).set(self.planner.scope_counts[scope])
        self.metrics.endpoints.set(sum(1 for e in self.endpoints.endpoints.values() if e.attached))
        self.metrics.identities.set(len(self.policy.identities))
        self.metrics.policy_entries.set(len(self.policy_maps.written_policy))
        self.metrics.policy_errors.set(len(self.policy.errors))
        fill = self.map_fill()
        for name, (entries, size) in fill.items():
            self.metrics.map_entries.labels(name).set(entries)
            self.metrics.map_size.labels(name).set(size)
        for bit, direction in ((EP_F_INGRESS_ENFORCED, "ingress"), (EP_F_EGRESS_ENFORCED, "egress")):
            self.metrics.isolated_endpoints.labels(direction).set(
                sum(1 for f in self.policy.endpoint_flags.values() if f & bit))

    def _sync_policy(self, local) -> None:
        """Compile NetworkPolicy and write it: entries, then endpoint flags, then removals."""
        t0 = time.monotonic()
        try:
            state = self.policy_compiler.compile(self.cluster, local)
        except (OSError, ValueError) as exc:  # the identity store: the datapath keeps its last state
            self.policy_problems = [f"policy not updated: {exc}"]
            log.error("policy not updated: %s", exc)
            return
        self.policy_problems = []
        for message in state.errors:
            if message not in self.policy.errors:
                log.warning("%s", message)
        self.policy = state
        written = self.policy_maps.write(state, self.endpoints.ep_ids())
        self.endpoints.set_policy(state)
        removed = self.policy_maps.prune()
        if written or removed:
            log.info("policy: %d entries written, %d removed in %.3fs",
                     written, removed, time.monotonic() - t0)

    def _map_fd(self, name: str) -> int:
        return self.programs.map_fd(name)

    def _attach_programs(self) -> None:
        """Replace the running programs with this agent's, once every map is written."""
        before = migrate.catch_up(self.migration, self._map_fd)
        self.endpoints.attach_pending()
        self._attach_uplinks()
        self._attach_socket_programs()
        if self.migration:
            after = migrate.catch_up(self.migration, self._map_fd)
            migrate.finish(self.migration)
            log.info("upgrade from ABI v%d complete; %d entries opened meanwhile carried over",
                     self.migration.from_version, sum(before.values()) + sum(after.values()))

    def _identities_changed(self) -> bool:
        """The cluster settled on other numbers for identities in use (see sources/identities)."""
        changed = getattr(self.identities, "changed", None)
        return bool(changed and changed())

    def _attach_uplinks(self) -> None:
        for name in self.options.uplinks:
            found = self.ipr.link_lookup(ifname=name)
            if not found:
                raise DatapathError(f"uplink {name} not found in this network namespace")
            tc.attach(self.ipr, found[0], tc.INGRESS, self.programs.from_network.fd,
                      self.programs.FROM_NETWORK)
            log.info("attached %s to uplink %s", self.programs.FROM_NETWORK, name)

    def _socket_link(self, name: str) -> Path:
        return abi.link_dir(self.options.node_name, self.options.datapath.pin_root) / name

    def _attach_socket_programs(self) -> None:
        where = self.options.socket_lb_cgroup
        for name, hook in self.programs.SOCKET_HOOKS.items():
            pin = self._socket_link(name)
            if where is None:
                if cgroup.detach(pin):  # an earlier start had it on; this one was told not to
                    log.info("detached %s (no --socket-lb-cgroup)", name)
                continue
            how = cgroup.attach(where, pin, self.programs.socket[name].fd, hook)
            log.info("%s on cgroup %s: %s", name, where, how)

    def _loop(self) -> None:
        next_resync = 0.0
        while not self.stopping.is_set():
            # a poll may parse tens of thousands of objects: the collector stays off
            # until its sync is done too (the model is then frozen out of its scans),
            # or it runs in between over everything the poll just allocated
            with gc_paused_for(BULK):
                events = self.source.poll()
                ready = getattr(self.source, "ready", True)
                now = time.monotonic()
                if ready and (events is not None or now >= next_resync or self.endpoints.errors):
                    self._sync(events, now)
                    next_resync = now + RESYNC_S
            if not ready:
                # the model is not whole yet: the pinned datapath stays as it is
                self._sleep()
                continue
            if self.ready and hasattr(self.identities, "collect_garbage") and not self.policy_problems:
                self.identities.collect_garbage()
            if self.ready and self.ct_gc.maybe_sweep():
                self.metrics.conntrack.set(self.ct_gc.live)
                self.metrics.conntrack_gc.inc(self.ct_gc.last_removed)
            self._sleep()

    def _sleep(self) -> None:
        """Until the source reports a change, or poll_interval: the poll finds what
        no notification reported (and the periodic work comes due)."""
        self.wakeup.wait(self.options.poll_interval)
        self.wakeup.clear()

    def _sync(self, events, now: float) -> None:
        """Bring the datapath to the model after `events` (None: a periodic resync)."""
        if events:
            self.cluster.apply_all(events)
            self._ifnames.clear()
        # Services and their slices change neither endpoints nor policy: a change
        # among 30,000 of them costs its own planning, not a pass over everything
        services_only = bool(events) and all(e.key.kind in SERVICE_KINDS for e in events)
        local = self.cluster.local_endpoints()
        ep_ids = self.endpoints.ep_ids()
        if not services_only or not self.ready or self.endpoints.errors:
            self.endpoints.sync(local, attach=self.ready)  # first sync: maps first, programs last
        if ((events and not services_only) or not self.ready
                or self.endpoints.ep_ids() != ep_ids
                or self.policy_maps.errors or self.policy_problems  # retry what failed
                or self._identities_changed()):
            self._sync_policy(local)
        node = self.cluster.nodes.get(self.options.node_name)
        self.node_config.set_ipv4(node.internal_ip if node else "")
        changes = self.planner.update(self.cluster, events) if events else {}
        if not self.ready:
            # first sync: a full diff against the adopted pins removes the
            # Services deleted while no agent was running
            self.lb.sync(self.planner.plan)
        elif changes:
            self.lb.apply(changes)
        if self._track_health_checked(changes):
            self.health.sync(wanted_from_plan({fe: self.planner.plan[fe] for fe in self._health_checked}))
        if not self.ready:
            self._attach_programs()
        self._update_metrics()
        if events:
            self.metrics.sync_seconds.observe(time.monotonic() - now)
        self.synced_generation = self.source.generation
        if not self.ready or len(events or ()) >= BULK:
            # the model built so far is long-lived: keep it out of GC scans, or the first
            # collection after a bulk sync rescans it all, in the middle of the next change
            gc.freeze()
        self.ready = True

    def _track_health_checked(self, changes) -> bool:
        """Keep the set of frontends with a health-check node port up to date from
        `changes` (the whole plan on the first sync); whether it or its members changed."""
        if not self.ready:
            self._health_checked = {fe for fe, sf in self.planner.plan.items() if sf.health_check_port}
            return True
        touched = False
        for fe, sf in changes.items():
            if sf is not None and sf.health_check_port:
                self._health_checked.add(fe)
                touched = True
            elif fe in self._health_checked:
                self._health_checked.discard(fe)
                touched = True
        return touched

    def _shutdown(self) -> None:
        log.info("stopping")
        if hasattr(self.source, "close"):
            self.source.close()
        self.server.stop(grace=1)
        self.health.close()
        self.reader.stop()
        self.reader.join(timeout=2)
        if self.options.exporter is not None:
            self.options.exporter.close()
        if self.options.cleanup_on_exit:
            self.endpoints.detach_all()
            for name in self.options.uplinks:
                for index in self.ipr.link_lookup(ifname=name):
                    tc.detach(self.ipr, index)
            self.programs.close()
            unpin_node(self.options.node_name, self.options.datapath.pin_root)
            log.info("detached every program and removed the pins")
        else:
            log.info("datapath left in place: programs stay attached, maps stay pinned")
