"""Writer of the service load-balancing maps: plan changes -> weft_lb4_*.

Ids are stable: a restarting agent reads service and backend ids back from the
pinned maps, so conntrack entries keep pointing at the right backend. Only the
frontends that changed are written. Within one change set, backends are
written first, then slots and Maglev tables, then the addresses frontends
listen on (weft_lb4_frontend_addrs, which the datapath checks first), then the
service entries whose `count` makes them visible; slots beyond a shrunken
count, addresses no frontend listens on any more, and backends no longer used,
are deleted last. A frontend whose writes fail keeps its previous
service entry: never a half-programmed Service.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from ..model import maglev
from ..model.services import EXTERNAL, PODS, Backend, Frontend, ServiceFrontend
from .errors import DatapathError
from .maps import BatchWriter, IdAllocator, be32_to_ip, delete_entry, ip_to_be32

log = logging.getLogger(__name__)

PROTO = {"TCP": 6, "UDP": 17}
PROTO_NAME = {v: k for k, v in PROTO.items()}
FLAG_MAGLEV = 0x1
FLAG_AFFINITY = 0x2
BACKEND_LOCAL = 0x1
SCOPE = {PODS: 0, EXTERNAL: 1}
SCOPE_NAME = {v: k for k, v in SCOPE.items()}
CT_DIR_SERVICE = 3


@dataclass(frozen=True)
class Written:
    svc_id: int
    backend_ids: tuple[int, ...]
    flags: int
    affinity_timeout: int


class LBMaps:
    def __init__(self, programs):
        t, cfg = programs.table, programs.config
        self.config = cfg
        self.services, self.slots = t("weft_lb4_services"), t("weft_lb4_slots")
        self.maglev, self.backends = t("weft_lb4_maglev"), t("weft_lb4_backends")
        self.addrs, self.ct = t("weft_lb4_frontend_addrs"), t("weft_ct")
        # map sizes as pinned (the frontend addresses' is set in lib/lb.h, relative to the services map)
        self.capacity = programs.capacity
        self.errors: list[str] = []
        self.failed_writes: list[DatapathError] = []  # drained by the agent into metrics
        self.stale: set[Frontend] = set()  # frontends whose last change could not be written
        self.backend_ids: dict[Backend, int] = {}
        self._by_id: dict[int, Backend] = {}  # backend_ids reversed
        self.written: dict[Frontend, Written] = {}
        self._restore()
        self.svc_ids = IdAllocator(w.svc_id for w in self.written.values())
        self.bids = IdAllocator(self.backend_ids.values())
        self.refs: Counter[int] = Counter(b for w in self.written.values() for b in w.backend_ids)
        # backends some frontend let go of since the last collection: the only candidates
        # (adopted backends no frontend uses are candidates from the start)
        self._released: set[int] = {bid for bid in self.backend_ids.values() if self.refs[bid] <= 0}
        self.addr_refs: Counter[tuple[int, int]] = Counter(self._addr_key(fe) for fe in self.written)
        self._reconcile_addrs()

    def _restore(self) -> None:
        """Adopt what a previous agent pinned."""
        for k, v in self.backends.items():
            self.backend_ids[Backend(be32_to_ip(v.ip), v.port, PROTO_NAME.get(v.proto, "?"),
                                     bool(v.flags & BACKEND_LOCAL))] = k.value
        self._by_id = {bid: b for b, bid in self.backend_ids.items()}
        for k, v in self.services.items():
            fe = Frontend(be32_to_ip(k.vip), k.port, PROTO_NAME.get(k.proto, "?"), SCOPE_NAME.get(k.scope, PODS))
            ids = []
            for slot in range(1, v.count + 1):
                try:
                    ids.append(self.slots[self.slots.Key(v.id, slot)].value)
                except KeyError:
                    break
            self.written[fe] = Written(v.id, tuple(ids), v.flags, v.affinity_timeout)
        if self.written:
            log.info("adopted %d service frontends and %d backends from pinned maps",
                     len(self.written), len(self.backend_ids))

    def _reconcile_addrs(self) -> None:
        """Make the address map match the adopted frontends (pins of an older ABI had none)."""
        stale = [k for k in self.addrs.keys() if (k.addr, k.scope) not in self.addr_refs]
        for key in stale:
            delete_entry(self.addrs, key)
        writes = BatchWriter(self.addrs, "weft_lb4_frontend_addrs", self.capacity("weft_lb4_frontend_addrs"))
        for key in self.addr_refs:
            writes.put(key, 1)
        writes.flush()

    @staticmethod
    def _svc_key(fe: Frontend) -> tuple:
        return (ip_to_be32(fe.ip), fe.port, PROTO[fe.protocol], SCOPE[fe.scope])

    @staticmethod
    def _addr_key(fe: Frontend) -> tuple[int, int]:
        return (ip_to_be32(fe.ip), SCOPE[fe.scope])

    def _backend_id(self, backend: Backend, writes: BatchWriter) -> int:
        bid = self.backend_ids.get(backend)
        if bid is None:
            bid = self.bids.allocate()
            writes.put(bid, (ip_to_be32(backend.ip), backend.port, PROTO[backend.protocol],
                             BACKEND_LOCAL if backend.local else 0))
            self.backend_ids[backend] = bid
            self._by_id[bid] = backend
        return bid

    def apply(self, changes: dict[Frontend, ServiceFrontend | None]) -> list[str]:
        """Write the changed frontends (None: removed); return what failed."""
        cfg, size = self.config, self.capacity
        backends = BatchWriter(self.backends, "weft_lb4_backends", size("weft_lb4_backends"))
        slots = BatchWriter(self.slots, "weft_lb4_slots", size("weft_lb4_slots"))
        tables = BatchWriter(self.maglev, "weft_lb4_maglev", size("weft_lb4_maglev"))
        services = BatchWriter(self.services, "weft_lb4_services", size("weft_lb4_services"))
        addrs = BatchWriter(self.addrs, "weft_lb4_frontend_addrs", size("weft_lb4_frontend_addrs"))
        planned: dict[Frontend, tuple[ServiceFrontend | None, Written | None]] = {}
        new_addrs: set[tuple[int, int]] = set()  # addresses no written frontend listens on yet

        for fe, sf in sorted(changes.items()):
            old = self.written.get(fe)
            if sf is None:
                planned[fe] = (None, None)  # no new entry: deleted below, `old` retired
                continue
            ids = tuple(self._backend_id(b, backends) for b in sf.backends)
            flags = (FLAG_MAGLEV if sf.algorithm == "maglev" and ids else 0) | \
                (FLAG_AFFINITY if sf.affinity_timeout else 0)
            svc_id = old.svc_id if old else self.svc_ids.allocate()
            new = Written(svc_id, ids, flags, sf.affinity_timeout)
            if new == old:
                continue
            for slot, bid in enumerate(ids, start=1):
                if not old or slot > len(old.backend_ids) or old.backend_ids[slot - 1] != bid:
                    slots.put((svc_id, slot), bid)
            if flags & FLAG_MAGLEV and (not old or old.backend_ids != ids or not old.flags & FLAG_MAGLEV):
                for index, b in enumerate(maglev.build_table([str(x) for x in sf.backends],
                                                             cfg.maglev_table_size)):
                    tables.put((svc_id, index), ids[b])
            services.put(self._svc_key(fe), (svc_id, len(ids), flags, sf.affinity_timeout,
                                             cfg.maglev_table_size if flags & FLAG_MAGLEV else 0))
            addr = self._addr_key(fe)
            if not old and self.addr_refs[addr] <= 0 and addr not in new_addrs:
                new_addrs.add(addr)
                addrs.put(addr, 1)
            planned[fe] = (sf, new)

        errors = []
        try:
            for writer in (backends, slots, tables, addrs, services):
                writer.flush()
        except DatapathError as exc:
            self.failed_writes.append(exc)
            for addr in new_addrs:  # no frontend of this change set listens on them
                delete_entry(self.addrs, self.addrs.Key(*addr))
            # nothing of this change set became visible: service entries go last
            errors.append(f"{len(planned)} service frontends not programmed: {exc}")
            self.stale.update(planned)
            for fe, (_, new) in planned.items():
                if new and fe not in self.written:
                    self.svc_ids.release(new.svc_id)
            self._record_errors(errors)
            return errors

        for fe, (sf, new) in planned.items():
            self.stale.discard(fe)
            old = self.written.pop(fe, None)
            if new is not None:
                self.written[fe] = new
                self.refs.update(new.backend_ids)
            else:
                delete_entry(self.services, self.services.Key(*self._svc_key(fe)))
            if old:
                self._retire(old, new)
            if bool(old) != bool(new):
                self._count_addr(self._addr_key(fe), 1 if new else -1)
        self._collect_backends()
        self._record_errors(errors)
        return errors

    def _retire(self, old: Written, new: Written | None) -> None:
        """Delete what `old` wrote and `new` no longer uses (the service entry already points past it)."""
        keep = len(new.backend_ids) if new else 0
        for slot in range(keep + 1, len(old.backend_ids) + 1):
            delete_entry(self.slots, self.slots.Key(old.svc_id, slot))
        if old.flags & FLAG_MAGLEV and not (new and new.flags & FLAG_MAGLEV):
            for index in range(self.config.maglev_table_size):
                delete_entry(self.maglev, self.maglev.Key(old.svc_id, index))
        self.refs.subtract(old.backend_ids)
        self._released.update(old.backend_ids)
        if new is None:
            self.svc_ids.release(old.svc_id)

    def _count_addr(self, addr: tuple[int, int], delta: int) -> None:
        """Count an address's frontends; its entry (written before its first
        frontend's service entry) goes after its last frontend's."""
        self.addr_refs[addr] += delta
        if self.addr_refs[addr] <= 0:
            del self.addr_refs[addr]
            delete_entry(self.addrs, self.addrs.Key(*addr))

    def sync(self, plan: dict[Frontend, ServiceFrontend]) -> list[str]:
        """Make the maps hold exactly `plan` (a full diff; apply() is the incremental path)."""
        changes: dict[Frontend, ServiceFrontend | None] = {fe: None for fe in self.written if fe not in plan}
        changes.update(plan)
        self.stale.intersection_update(plan)
        return self.apply(changes)

    def _record_errors(self, errors: list[str]) -> None:
        for message in errors:
            if message not in self.errors:
                log.error("%s", message)
        self.errors = errors

    def _collect_backends(self) -> None:
        """Delete backends no frontend uses; UDP ones take their conntrack entries along,
        so clients are not left sending into a backend that is gone."""
        released, self._released = self._released, set()
        if not released:
            return
        gone = {self._by_id[bid]: bid for bid in released if self.refs[bid] <= 0 and bid in self._by_id}
        if not gone:
            return
        for backend, bid in gone.items():
            delete_entry(self.backends, self.backends.Key(bid))
            del self.backend_ids[backend]
            del self._by_id[bid]
            del self.refs[bid]
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
