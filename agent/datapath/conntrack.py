"""Conntrack garbage collection: deleting entries whose lifetime has passed.

The datapath ignores expired entries and the map is an LRU, so nothing breaks
without this; the sweep keeps the table's fill honest (what `weft_ct` holds is
live connections) and frees room before the LRU has to evict live ones.
Lifetimes are CLOCK_MONOTONIC seconds, the clock of bpf_ktime_get_ns().
"""
from __future__ import annotations

import logging
import time

from .maps import delete_all, delete_entry, lookup_all

log = logging.getLogger(__name__)


class ConntrackGC:
    INTERVAL_S = 30.0

    def __init__(self, programs):
        self.ct = programs.table("weft_ct")
        self.next_run = 0.0
        self.last_removed = 0
        self.live = 0

    def sweep(self) -> int:
        """Delete every expired entry now; return how many."""
        now = int(time.monotonic())
        found = lookup_all(self.ct)
        if found is None:
            entries, expired = self._sweep_one_by_one(now)
        else:
            keys, values, entries = found
            stale = [keys[i] for i in range(entries) if values[i].expires < now]
            expired = delete_all(self.ct, (self.ct.Key * len(stale))(*stale)) if stale else 0
        self.last_removed = expired
        self.live = entries - expired
        if expired:
            log.debug("conntrack GC removed %d expired entries", expired)
        return expired

    def _sweep_one_by_one(self, now: int) -> tuple[int, int]:
        """The sweep where the kernel has no batch operations for the map."""
        entries = 0
        expired = []
        for k, v in self.ct.items():
            entries += 1
            if v.expires < now:
                expired.append(k)
        for key in expired:
            delete_entry(self.ct, key)
        return entries, len(expired)

    def maybe_sweep(self) -> bool:
        """Sweep when the interval has passed; True if it did."""
        if time.monotonic() < self.next_run:
            return False
        self.next_run = time.monotonic() + self.INTERVAL_S
        self.sweep()
        return True
