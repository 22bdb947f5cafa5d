"""Flow events: how fast the agent drains the datapath's ring buffer, and at what CPU cost.

  flows-drain   the datapath emits events as fast as BPF_PROG_TEST_RUN can make
                it (every packet reported: aggregation none) in rounds of a fixed
                size; the agent's own reader (decoder, store, metrics sink) drains
                them on its thread. Reported: events offered per second, the share
                drained (losses are the kernel's reserve failures), and the
                reader thread's CPU per 1,000 events (goal: >= 200,000 events/s
                on one core with under 1% lost). The ring is the agent's default
                (256 pages, about 14,000 events), so a reader slower than the
                offered rate shows as losses within a round.
"""
from __future__ import annotations

import threading
import time

from agent.datapath.node_config import NodeConfig
from agent.datapath.testrun import test_run
from agent.metrics import AgentMetrics
from agent.model.cluster import Cluster
from agent.observe.decode import FlowDecoder
from agent.observe.reader import FlowReader
from agent.observe.store import FlowStore
from tests import packets as pk

from .common import scratch_datapath, summarize, table


def thread_cpu_s(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def drain_round(programs, reader: FlowReader, store: FlowStore, events: int, burst: int, rate: float) -> dict:
    """Offer `events` at about `rate` per second in bursts; wait for the reader to catch up."""
    start_seen, start_lost = store.seen_flows, reader.kernel_lost()
    cpu0 = thread_cpu_s(reader)
    packet = pk.tcp_packet("10.1.0.1", "10.1.0.2", 40000, 80, flags=pk.TCP_ACK)
    t0 = time.perf_counter()
    sent = 0
    while sent < events:
        n = min(burst, events - sent)
        test_run(programs.from_pod.fd, packet, n)
        sent += n
        ahead = sent / rate - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
    offered_s = time.perf_counter() - t0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = store.seen_flows - start_seen + reader.kernel_lost() - start_lost
        if done >= events:
            break
        time.sleep(0.01)
    drained = store.seen_flows - start_seen
    lost = reader.kernel_lost() - start_lost
    cpu = thread_cpu_s(reader) - cpu0
    return {"offered_per_s": events / offered_s, "drained": drained, "lost": lost,
            "loss": lost / events, "cpu_ms_per_1k": cpu * 1000 / max(drained, 1) * 1000}


def run(quick: bool) -> dict:
    runs = 3 if quick else 5
    events = 100_000 if quick else 300_000
    rates = [100_000, 200_000, 300_000, 400_000, 600_000]
    results: dict = {"flows-drain": {}}
    with scratch_datapath() as programs:  # the agent's default ring: 256 pages
        NodeConfig(programs).set_aggregation("none", 5)
        store = FlowStore("bench", 4095)
        decoder = FlowDecoder("bench", Cluster("bench"), lambda index: "lo")
        reader = FlowReader(programs.bpf, decoder, store)
        AgentMetrics().watch_flows(reader)
        reader.start()
        try:
            for rate in rates:
                rounds = [drain_round(programs, reader, store, events, 512, rate) for _ in range(runs)]
                results["flows-drain"][rate] = {k: summarize([r[k] for r in rounds])
                                                for k in ("offered_per_s", "loss", "cpu_ms_per_1k")}
        finally:
            reader.stop()
            reader.join(timeout=2)
    rows = []
    for rate, r in results["flows-drain"].items():
        rows.append([rate, round(r["offered_per_s"]["median"]), f"{r['loss']['median'] * 100:.2f}%",
                     f"{r['loss']['max'] * 100:.2f}%", r["cpu_ms_per_1k"]["median"],
                     round(1000 / r["cpu_ms_per_1k"]["median"] * 1000) if r["cpu_ms_per_1k"]["median"] else 0,
                     "noisy" if r["cpu_ms_per_1k"]["noisy"] else ""])
    print(table(f"flows-drain: {events} events per round at a target rate, medians of {runs} rounds "
                "(goal: >= 200,000 events/s on one core, < 1% lost)",
                ["target/s", "offered/s", "lost", "max lost", "reader CPU ms/1k", "events/s per core", ""], rows))
    return results
