"""Bulk loads without the cyclic GC.

Model and plan objects hold no reference cycles, and collections triggered by
the allocations of a bulk load (the first list of a large cluster) rescan the
growing heap over and over: a third of the time at 40,000 pods.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager

BULK = 1000


@contextmanager
def gc_paused_for(count: int):
    paused = count >= BULK and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
