"""Conntrack inserts: what a new connection costs from_pod on a table that
connections have churned through, with the kernel's common LRU lists (the
default) and with per-CPU lists (--ct-map-lru=per-cpu).

  ct-insert   ns per new connection (BPF_PROG_TEST_RUN, one run each, the
              kernel's own timing), p50 / p99 / p99.9, on a fresh table and on
              one that three times its size in connections went through.

The tail is the point: the common LRU hands each CPU 128 free entries at a
time from one shared list, and on a churned table those lie scattered over
all of it, so a few new connections in a thousand wait for the refill
(lib/conntrack.h says more).
"""
from __future__ import annotations

from agent.datapath.testrun import test_run
from tests import packets as pk

from .common import percentile, rotated, scratch_datapath, summarize, table

KINDS = {"common": False, "per-cpu": True}
STATES = ("fresh", "churned")
QUANTILES = {"p50": 0.5, "p99": 0.99, "p999": 0.999}


def new_connections(fd: int, first: int, count: int) -> list[int]:
    """ns of from_pod for `count` SYNs of connections never seen, numbered from `first`."""
    out = []
    for a in range(first, first + count):
        syn = pk.tcp_packet(f"10.250.{(a >> 16) & 255}.2", f"10.240.{(a >> 8) & 255}.{a & 255}",
                            1024 + a % 60000, 8080)
        out.append(test_run(fd, syn, 1).duration_ns)
    return out


def insert_tail(size: int, per_cpu: bool, measured: int) -> dict[str, dict[str, int]]:
    with scratch_datapath(ct_map_size=size, ct_map_per_cpu_lru=per_cpu) as programs:
        fd = programs.from_pod.fd
        fresh = new_connections(fd, 0, measured)
        new_connections(fd, measured, 3 * size)  # churn: three times the table in new connections
        churned = new_connections(fd, measured + 3 * size, measured)
    return {state: {name: percentile(samples, q) for name, q in QUANTILES.items()}
            for state, samples in (("fresh", fresh), ("churned", churned))}


def run(quick: bool) -> dict:
    size, runs, measured = (16384, 3, 5000) if quick else (65536, 5, 20000)
    samples = {kind: {state: {q: [] for q in QUANTILES} for state in STATES} for kind in KINDS}
    for rep in range(runs):
        for kind in rotated(list(KINDS), rep):
            for state, figures in insert_tail(size, KINDS[kind], measured).items():
                for q, v in figures.items():
                    samples[kind][state][q].append(v)
    results = {kind: {state: {q: summarize(v) for q, v in by_q.items()} for state, by_q in by_state.items()}
               for kind, by_state in samples.items()}
    for state in STATES:
        for q in QUANTILES:
            results["per-cpu"][state][q]["x_common"] = round(
                results["per-cpu"][state][q]["median"] / results["common"][state][q]["median"], 3)
    rows = [[kind, state, *(results[kind][state][q]["median"] for q in QUANTILES),
             *(results[kind][state][q].get("x_common", 1.0) for q in QUANTILES),
             "noisy" if any(results[kind][state][q]["noisy"] for q in QUANTILES) else ""]
            for state in STATES for kind in KINDS]
    print(table(f"B1 conntrack: ns per new connection in from_pod, {size:,}-entry table, medians of {runs} runs "
                f"of {measured:,} connections",
                ["LRU", "table", "p50", "p99", "p99.9", "p50 x common", "p99 x common", "p99.9 x common", ""], rows))
    return {"ct-insert": {"table_entries": size, **results}}
