"""Programs the local endpoints: the model's pods on this node -> datapath state.

An endpoint is found by its pod IP: the CNI (here, the lab) routes each pod IP
/32 to the pod's host-side interface, and that route is the truth about which
interface serves the pod. Endpoint ids survive agent restarts: they are read
back from the pinned weft_endpoints map before anything is written.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, replace

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..model.cluster import Pod
from ..model.policy import EGRESS, EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED, INGRESS, PolicyState
from . import tc
from .endpoint_map import EndpointMap, EndpointRecord
from .errors import DatapathError
from .maps import IdAllocator
from .loader import PodPrograms

log = logging.getLogger(__name__)

NEW_ENDPOINT_FLAGS = EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED


@dataclass(frozen=True)
class Endpoint:
    pod: Pod
    ifindex: int
    ifname: str
    record: EndpointRecord
    attached: bool


def pod_routes(ipr: IPRoute) -> dict[str, tuple[int, str]]:
    """Every IPv4 /32 route without a gateway: pod IP -> (ifindex, ifname)."""
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    routes = {}
    for route in ipr.get_routes(family=socket.AF_INET):
        if route["dst_len"] != 32 or route.get_attr("RTA_GATEWAY"):
            continue
        dst, oif = route.get_attr("RTA_DST"), route.get_attr("RTA_OIF")
        if dst and oif:
            routes[dst] = (oif, names.get(oif, ""))
    return routes


class EndpointManager:
    def __init__(self, programs: PodPrograms, ipr: IPRoute):
        self.programs = programs
        self.ipr = ipr
        self.map = EndpointMap(programs.table("weft_endpoints"), programs.capacity("weft_endpoints"))
        # adopt what a previous agent pinned: ifindex -> record
        self.records: dict[int, EndpointRecord] = self.map.read()
        self.attached: set[int] = set()
        self.endpoints: dict[str, Endpoint] = {}
        self.errors: list[str] = []

    def sync(self, desired: dict[str, Pod], attach: bool = True) -> list[str]:
        """Make the datapath serve exactly `desired`; return what could not be done.

        With attach=False, endpoint records are written but programs are not
        attached yet (`attach_pending`): the agent's first sync writes every map
        before its programs replace the ones running."""
        errors: list[str] = []
        routes = pod_routes(self.ipr)
        wanted: dict[int, tuple[Pod, str]] = {}
        for key, pod in sorted(desired.items()):
            found = routes.get(pod.ip)
            if not found:
                errors.append(f"pod {key}: no route to its IP {pod.ip} on this node yet")
                continue
            wanted[found[0]] = (pod, found[1])

        for ifindex in sorted(set(self.records) - set(wanted)):
            self._remove(ifindex)

        ids = IdAllocator(r.ep_id for i, r in self.records.items() if i in wanted)
        endpoints: dict[str, Endpoint] = {}
        for ifindex, (pod, ifname) in wanted.items():
            record = self.records.get(ifindex)
            if record is None or record.ipv4 != pod.ip:
                ep_id = record.ep_id if record else ids.allocate()
                # isolated both ways until its policy is written (set_policy)
                record = EndpointRecord(ep_id=ep_id, ipv4=pod.ip, flags=NEW_ENDPOINT_FLAGS)
                try:
                    self.map.write(ifindex, record)
                except DatapathError as exc:
                    errors.append(f"pod {pod.key}: {exc}")
                    continue
                self.records[ifindex] = record
            if ifindex not in self.attached and attach:
                try:
                    self._attach(ifindex)
                except NetlinkError as exc:
                    errors.append(f"pod {pod.key}: attaching to {ifname} failed: {exc}")
            endpoints[pod.key] = Endpoint(pod, ifindex, ifname, record, ifindex in self.attached)
        self.endpoints = endpoints
        for message in errors:
            if message not in self.errors:
                log.warning("%s", message)
        self.errors = errors
        return errors

    def attach_pending(self) -> None:
        """Attach the programs to every endpoint not attached yet."""
        for key, ep in list(self.endpoints.items()):
            if ep.attached:
                continue
            try:
                self._attach(ep.ifindex)
            except NetlinkError as exc:
                self.errors.append(f"pod {key}: attaching to {ep.ifname} failed: {exc}")
                continue
            self.endpoints[key] = replace(ep, attached=True)

    def ep_ids(self) -> dict[str, int]:
        return {key: ep.record.ep_id for key, ep in self.endpoints.items()}

    def set_policy(self, state: PolicyState) -> list[str]:
        """Write each endpoint's identity, isolation flags and prefix kinds where they changed."""
        errors = []
        for key, ep in list(self.endpoints.items()):
            wanted = replace(ep.record, identity=state.pod_identity.get(key, 0),
                             flags=state.endpoint_flags.get(key, NEW_ENDPOINT_FLAGS),
                             ingress_prefixes=state.prefixes(key, INGRESS),
                             egress_prefixes=state.prefixes(key, EGRESS))
            if wanted == ep.record:
                continue
            try:
                self.map.write(ep.ifindex, wanted)
            except DatapathError as exc:
                errors.append(f"pod {key}: {exc}")
                continue
            self.records[ep.ifindex] = wanted
            self.endpoints[key] = replace(ep, record=wanted)
        self.errors.extend(e for e in errors if e not in self.errors)
        return errors

    def _attach(self, ifindex: int) -> None:
        p = self.programs
        tc.attach(self.ipr, ifindex, tc.INGRESS, p.from_pod.fd, p.FROM_POD)
        tc.attach(self.ipr, ifindex, tc.EGRESS, p.to_pod.fd, p.TO_POD)
        self.attached.add(ifindex)
        log.info("attached %s/%s to ifindex %d", p.FROM_POD, p.TO_POD, ifindex)

    def _remove(self, ifindex: int) -> None:
        self.map.delete(ifindex)
        self.records.pop(ifindex, None)
        self.attached.discard(ifindex)
        try:
            tc.detach(self.ipr, ifindex)
        except NetlinkError as exc:  # the interface is usually gone with its pod
            log.debug("detach ifindex %d: %s", ifindex, exc)

    def detach_all(self) -> None:
        for ifindex in list(self.records):
            self._remove(ifindex)
