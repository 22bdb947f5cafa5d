"""Flow events: how fast the agent drains the datapath's ring buffer, and at what CPU cost.

  flows-requests  short requests (a new connection each, bench/loadgen.c) from a
                client pod to a Service in a 1-node lab, with the agent's flows at
                `medium` and switched `off`, interleaved, with 1 and 4 clients
                (goal: rate on >= 0.97 x rate off).
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

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent.datapath.loader import DatapathConfig, PodPrograms
from agent.datapath.node_config import AGGREGATION, NodeConfig
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


MESHCTL = str(Path(sys.executable).parent / "meshctl")
MANIFEST = Path(__file__).parent / "manifests_flows.yaml"
CLIENT_NS, SERVER_NS = "weft-pod-bench-client", "weft-pod-bench-server"
LOADGEN_PORT = 9000  # the Service's targetPort: loadgen.c's server, not the lab's


def set_aggregation(table, level: str) -> None:
    """Change only the level in the agent's pinned weft_node (its IP stays as written)."""
    leaf = table[table.Key(0)]
    leaf.aggregation = AGGREGATION[level]
    table[table.Key(0)] = leaf


def requests_run(quick: bool) -> dict:
    """Short requests through a Service in a 1-node lab, flows `off` and at `medium`,
    interleaved: with one client (the machine has idle CPU) and with four (it has
    none, and the agent's draining competes with the clients for it)."""
    from cli.lab import state as lab_state

    from . import traffic

    if lab_state.exists():
        print("flows-requests: skipped, a lab is already up (`meshctl lab down` first)")
        return {}
    if shutil.which("gcc") is None:
        print("flows-requests: skipped, no gcc for bench/loadgen.c (scripts/setup --bench installs it)")
        return {}
    runs, seconds = (3, 2.0) if quick else (5, 4.0)
    loadgen = traffic.build()
    subprocess.run([MESHCTL, "lab", "up", "--nodes", "1", "-f", str(MANIFEST)], check=True, capture_output=True)
    server = subprocess.Popen(["ip", "netns", "exec", SERVER_NS, loadgen, "serve", str(LOADGEN_PORT), "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    result: dict = {}
    try:
        services = json.loads(subprocess.run([MESHCTL, "lab", "get", "services", "-o", "json"], check=True,
                                             capture_output=True, text=True).stdout)["items"]
        vip = next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "web")
        programs = PodPrograms(DatapathConfig(node="node-1"))  # shares the lab agent's pinned maps
        try:
            node = programs.table("weft_node")

            def rate(workers: int) -> float:
                return traffic.short_requests(loadgen, CLIENT_NS, vip, 80, seconds, workers)[0] / seconds

            rate(2)  # warm up
            for workers in (1, 4):
                on, off = [], []
                for _ in range(runs):
                    set_aggregation(node, "off")
                    off.append(rate(workers))
                    set_aggregation(node, "medium")
                    on.append(rate(workers))
                result[f"{workers}_clients"] = {"flows_off_rps": summarize(off), "flows_on_rps": summarize(on),
                                                "ratio": summarize([a / b for a, b in zip(on, off)])}
        finally:
            set_aggregation(programs.table("weft_node"), "medium")
            programs.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        subprocess.run([MESHCTL, "lab", "down"], capture_output=True)
        traffic.remove(loadgen)
    print(table(f"flows-requests: requests/s, a new connection each, {seconds:.0f} s per run, "
                f"{runs} runs interleaved (goal: on / off >= 0.97)",
                ["clients", "flows off", "flows on (medium)", "on / off", "min ratio", ""],
                [[k.split("_")[0], r["flows_off_rps"]["median"], r["flows_on_rps"]["median"],
                  round(r["ratio"]["median"], 3), round(r["ratio"]["min"], 3),
                  "noisy" if r["flows_off_rps"]["noisy"] or r["flows_on_rps"]["noisy"] else ""]
                 for k, r in result.items()]))
    return result


def run(quick: bool) -> dict:
    runs = 3 if quick else 5
    events = 100_000 if quick else 300_000
    rates = [100_000, 200_000, 400_000, 600_000, 1_000_000, 2_000_000]
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
    print()
    results["flows-requests"] = requests_run(quick)
    return results
