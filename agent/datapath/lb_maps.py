"""Writer of the service load-balancing maps: the plan -> weft_lb4_*.

Ids are stable: a restarting agent reads service and backend ids back from the
pinned maps, so conntrack entries keep pointing at the right backend. Writes
are diffs against what is in the maps: one changed Service writes its own
entries only. For each frontend the slots (or Maglev table) are written
before the service entry whose `count` makes them visible, and slots beyond
a shrunken count are deleted after it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..model import maglev
from ..model.services import Backend, Frontend, ServiceFrontend
from .errors import DatapathError
from .maps import IdAllocator, be32_to_ip, delete_entry, ip_to_be32, write_entry

log = logging.getLogger(__name__)

PROTO = {"TCP": 6, "UDP": 17}
PROTO_NAME = {v: k for k, v in PROTO.items()}
FLAG_MAGLEV = 0x1
FLAG_AFFINITY = 0x2
CT_DIR_SERVICE = 3


@dataclass(frozen=True)
class Written:
    svc_id: int
    backend_ids: tuple[int, ...]
    flags: int
    affinity_timeout: int


class LBMaps:
    def __init__(self, programs):
        t = programs.table
        self.services, self.slots = t("weft_lb4_services"), t("weft_lb4_slots")
        self.maglev, self.backends = t("weft_lb4_maglev"), t("weft_lb4_backends")
        self.affinity, self.ct = t("weft_lb4_affinity"), t("weft_ct")
        self.sizes = programs.config
        self.errors: list[str] = []
        self.backend_ids: dict[Backend, int] = {}
        self.written: dict[Frontend, Written] = {}
        self._restore()

    # ---- adopting what is pinned -------------------------------------------------

    def _restore(self) -> None:
        for k, v in self.backends.items():
            self.backend_ids[Backend(be32_to_ip(v.ip), v.port, PROTO_NAME.get(v.proto, "?"))] = k.value
        for k, v in self.services.items():
            fe = Frontend(be32_to_ip(k.vip), k.port, PROTO_NAME.get(k.proto, "?"))
            ids = []
            for slot in range(1, v.count + 1):
                try:
                    ids.append(self.slots[self.slots.Key(v.id, slot)].value)
                except KeyError:
                    break
            self.written[fe] = Written(v.id, tuple(ids), v.flags, v.affinity_timeout)
        self.svc_ids = IdAllocator(w.svc_id for w in self.written.values())
        self.bids = IdAllocator(self.backend_ids.values())
        if self.written:
            log.info("adopted %d service frontends and %d backends from pinned maps",
                     len(self.written), len(self.backend_ids))

    # ---- writing -------------------------------------------------------------------

    def _backend_id(self, backend: Backend) -> int:
        if backend in self.backend_ids:
            return self.backend_ids[backend]
        bid = self.bids.allocate()
        leaf = self.backends.Leaf()
        leaf.ip, leaf.port, leaf.proto, leaf.flags = ip_to_be32(backend.ip), backend.port, PROTO[backend.protocol], 0
        write_entry(self.backends, self.backends.Key(bid), leaf, "weft_lb4_backends", self.sizes.lb_backends)
        self.backend_ids[backend] = bid
        return bid

    def _svc_key(self, fe: Frontend):
        key = self.services.Key()
        key.vip, key.port, key.proto = ip_to_be32(fe.ip), fe.port, PROTO[fe.protocol]
        return key

    def _write_frontend(self, sf: ServiceFrontend, old: Written | None) -> Written:
        fe = sf.frontend
        svc_id = old.svc_id if old else self.svc_ids.allocate()
        ids = tuple(self._backend_id(b) for b in sf.backends)
        flags = (FLAG_MAGLEV if sf.algorithm == "maglev" else 0) | (FLAG_AFFINITY if sf.affinity_timeout else 0)
        new = Written(svc_id, ids, flags, sf.affinity_timeout)
        if old == new:
            return old
        for slot, bid in enumerate(ids, start=1):
            if not old or slot > len(old.backend_ids) or old.backend_ids[slot - 1] != bid:
                write_entry(self.slots, self.slots.Key(svc_id, slot), self.slots.Leaf(bid),
                            "weft_lb4_slots", self.sizes.lb_slots)
        if flags & FLAG_MAGLEV and (not old or old.backend_ids != ids or not old.flags & FLAG_MAGLEV):
            table = maglev.build_table([str(b) for b in sf.backends], self.sizes.maglev_table_size)
            for index, b in enumerate(table):
                write_entry(self.maglev, self.maglev.Key(svc_id, index), self.maglev.Leaf(ids[b]),
                            "weft_lb4_maglev", self.sizes.lb_maglev)
        leaf = self.services.Leaf()
        leaf.id, leaf.count, leaf.flags = svc_id, len(ids), flags
        leaf.affinity_timeout = sf.affinity_timeout
        leaf.maglev_size = self.sizes.maglev_table_size if flags & FLAG_MAGLEV and ids else 0
        write_entry(self.services, self._svc_key(fe), leaf, "weft_lb4_services", self.sizes.lb_services)
        if old:
            for slot in range(len(ids) + 1, len(old.backend_ids) + 1):
                delete_entry(self.slots, self.slots.Key(svc_id, slot))
            if old.flags & FLAG_MAGLEV and not (flags & FLAG_MAGLEV and ids):
                self._delete_maglev(svc_id)
        return new

    def _delete_maglev(self, svc_id: int) -> None:
        for index in range(self.sizes.maglev_table_size):
            delete_entry(self.maglev, self.maglev.Key(svc_id, index))

    def _remove_frontend(self, fe: Frontend, old: Written) -> None:
        delete_entry(self.services, self._svc_key(fe))
        for slot in range(1, len(old.backend_ids) + 1):
            delete_entry(self.slots, self.slots.Key(old.svc_id, slot))
        if old.flags & FLAG_MAGLEV:
            self._delete_maglev(old.svc_id)
        self.svc_ids.release(old.svc_id)

    def sync(self, plan: dict[Frontend, ServiceFrontend]) -> list[str]:
        """Make the maps hold `plan`; return what could not be programmed."""
        errors = []
        for fe in sorted(set(self.written) - set(plan)):
            self._remove_frontend(fe, self.written.pop(fe))
        for fe, sf in sorted(plan.items()):
            try:
                self.written[fe] = self._write_frontend(sf, self.written.get(fe))
            except DatapathError as exc:
                errors.append(f"service {sf.namespace}/{sf.name} {fe}: {exc}")
        self._collect_backends()
        for message in errors:
            if message not in self.errors:
                log.error("%s", message)
        self.errors = errors
        return errors

    def _collect_backends(self) -> None:
        """Delete backends no frontend uses; UDP ones take their conntrack entries along,
        so clients are not left sending into a backend that is gone."""
        in_use = {bid for w in self.written.values() for bid in w.backend_ids}
        gone = {b: bid for b, bid in self.backend_ids.items() if bid not in in_use}
        if not gone:
            return
        for backend, bid in gone.items():
            delete_entry(self.backends, self.backends.Key(bid))
            del self.backend_ids[backend]
            self.bids.release(bid)
        udp = {(ip_to_be32(b.ip), b.port) for b in gone if b.protocol == "UDP"}
        if udp:
            self._purge_udp_conntrack(udp, set(gone.values()))

    def _purge_udp_conntrack(self, addrs: set[tuple[int, int]], ids: set[int]) -> None:
        stale = []
        for k, v in self.ct.items():
            if k.proto != 17:
                continue
            if (k.dir == CT_DIR_SERVICE and v.backend_id in ids) or (k.daddr, k.dport) in addrs \
                    or (k.saddr, k.sport) in addrs:
                stale.append(k)
        for k in stale:
            delete_entry(self.ct, k)
        if stale:
            log.info("removed %d UDP conntrack entries of deleted backends", len(stale))
