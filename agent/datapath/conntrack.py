"""Conntrack garbage collection: deleting entries whose lifetime has passed.

The datapath ignores expired entries and the map is an LRU, so nothing breaks
without this; the sweep keeps the table's fill honest (what `weft_ct` holds is
live connections) and frees room before the LRU has to evict live ones.
Lifetimes are CLOCK_MONOTONIC seconds, the clock of bpf_ktime_get_ns().
"""
from __future__ import annotations

import logging
import time

from .maps import delete_entry

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
        entries = 0
        expired = []
        for k, v in self.ct.items():
            entries += 1
            if v.expires < now:
                expired.append(k)
        for key in expired:
            delete_entry(self.ct, key)
        self.last_removed = len(expired)
        self.live = entries - len(expired)
        if expired:
            log.debug("conntrack GC removed %d expired entries", len(expired))
        return len(expired)

    def maybe_sweep(self) -> bool:
        """Sweep when the interval has passed; True if it did."""
        if time.monotonic() < self.next_run:
            return False
        self.next_run = time.monotonic() + self.INTERVAL_S
        self.sweep()
        return True
