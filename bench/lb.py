"""Service load balancing: per-packet cost and control-plane speed at scale.

  lb-packet   ns per packet of the service path (BPF_PROG_TEST_RUN, the kernel's
              own timing) at 100 / 1k / 10k / 50k Services x 4 backends, against a
              trivial program measured in the same run.
  lb-sync     programming N Services from scratch (plan + map writes), and the
              time from one changed Service's event until the datapath picks
              its new backend.
"""
from __future__ import annotations

import ipaddress
import random
import time

from agent.datapath.lb_maps import LBMaps
from agent.datapath.testrun import test_run
from agent.model.cluster import Cluster
from agent.model.services import ServicePlanner
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey
from tests import packets as pk

from .common import scratch_datapath, summarize, table, trivial_program

BACKENDS = 4
CLIENT = "10.250.0.2"
VIP_BASE = ipaddress.IPv4Address("10.96.0.0")
POD_BASE = ipaddress.IPv4Address("10.128.0.0")


def vip(i: int) -> str:
    return str(VIP_BASE + 10 + i)


def cluster_events(n: int) -> list[Event]:
    events = []
    for i in range(n):
        app = f"svc-{i}"
        for b in range(BACKENDS):
            name = f"{app}-{b}"
            events.append(Event(EventType.ADDED, ObjectKey("Pod", "bench", name), {
                "kind": "Pod", "metadata": {"name": name, "namespace": "bench", "labels": {"app": app}},
                "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": str(POD_BASE + i * BACKENDS + b), "phase": "Running"}}))
        events.append(service_event(i, app))
    return events


def service_event(i: int, app: str) -> Event:
    return Event(EventType.ADDED, ObjectKey("Service", "bench", f"s{i}"), {
        "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "bench"},
        "spec": {"selector": {"app": app}, "clusterIP": vip(i),
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})


def program(programs, n: int):
    """Build the model of n Services and their pods, then plan and write them from
    scratch; return (planner, cluster, lb, {stage: seconds})."""
    events = cluster_events(n)
    lb = LBMaps(programs)
    t0 = time.perf_counter()
    cluster, planner = Cluster("n1"), ServicePlanner()
    cluster.apply_all(events)
    t1 = time.perf_counter()
    lb.apply(planner.update(cluster, events))
    t2 = time.perf_counter()
    return planner, cluster, lb, {"model_s": t1 - t0, "program_s": t2 - t1, "total_s": t2 - t0}


def clear(programs, lb) -> None:
    lb.sync({})
    programs.table("weft_ct").clear()


def packet_cost(programs, n: int, repeat: int, runs: int, trivial_fd: int) -> dict:
    _, _, lb, _ = program(programs, n)
    rng = random.Random(n)
    est, new, floor = [], [], []
    for run in range(runs):
        target = rng.randrange(n)
        pkt = pk.tcp_packet(CLIENT, vip(target), 30000 + run, 80, flags=pk.TCP_ACK)
        floor.append(test_run(trivial_fd, pkt, repeat).duration_ns)
        est.append(test_run(programs.from_pod.fd, pkt, repeat).duration_ns)  # conntrack hit
        fresh = []
        for c in range(200):  # a new connection each: service lookup, selection, two CT inserts
            syn = pk.tcp_packet(CLIENT, vip(rng.randrange(n)), 1024 + run * 200 + c, 80)
            fresh.append(test_run(programs.from_pod.fd, syn, 1).duration_ns)
        fresh.sort()
        new.append(fresh[len(fresh) // 2])
    clear(programs, lb)
    return {"trivial_ns": summarize(floor), "established_ns": summarize(est), "new_connection_ns": summarize(new)}


def one_change(programs, n: int, runs: int) -> dict:
    """Event -> datapath effect for one Service among n: its backends are replaced."""
    planner, cluster, lb, full = program(programs, n)
    samples = []
    target = n // 2
    for run in range(runs):
        new_ip = str(ipaddress.IPv4Address("10.200.0.0") + run)
        pod = Event(EventType.ADDED, ObjectKey("Pod", "bench", f"moved-{run}"), {
            "kind": "Pod", "metadata": {"name": f"moved-{run}", "namespace": "bench",
                                        "labels": {"app": f"moved-{run}"}},
            "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": new_ip, "phase": "Running"}})
        svc = service_event(target, f"moved-{run}")
        svc = Event(EventType.MODIFIED, svc.key, svc.obj)
        start = time.perf_counter()
        cluster.apply_all([pod, svc])
        lb.apply(planner.update(cluster, [pod, svc]))
        port = 2000 + run * 100
        while True:  # a fresh connection through the datapath until it reaches the new backend
            out = pk.Parsed(test_run(programs.from_pod.fd, pk.tcp_packet(CLIENT, vip(target), port, 80)).packet)
            port += 1
            if out.dst == new_ip:
                break
        samples.append((time.perf_counter() - start) * 1000)
    clear(programs, lb)
    return {**full, "one_change_ms": summarize(samples)}


def run(quick: bool) -> dict:
    scales = [100, 1000] if quick else [100, 1000, 10000, 50000]
    runs = 3 if quick else 5
    repeat = 20000 if quick else 100000
    results: dict = {"lb-packet": {}, "lb-sync": {}}
    # 50,000 Services x 4 backends: 200,000 backends, 200,000 slots
    with scratch_datapath(ct_map_size=262144, lb_backends=262144, lb_slots=524288) as programs:
        bpf, trivial = trivial_program()
        try:
            for n in scales:
                results["lb-packet"][n] = packet_cost(programs, n, repeat, runs, trivial.fd)
            for n in scales:
                stages: dict[str, list[float]] = {"model_s": [], "program_s": [], "total_s": []}
                changes: list[float] = []
                for _ in range(runs):
                    r = one_change(programs, n, 3)
                    for stage in stages:
                        stages[stage].append(r[stage])
                    changes.append(r["one_change_ms"]["median"])
                results["lb-sync"][n] = {**{k: summarize(v) for k, v in stages.items()},
                                         "one_change_ms": summarize(changes)}
        finally:
            bpf.cleanup()
    rows = []
    for n, r in results["lb-packet"].items():
        t, e, f = (r[k]["median"] for k in ("trivial_ns", "established_ns", "new_connection_ns"))
        rows.append([n, t, e, f, round(e / t, 2), round(f / t, 2),
                     "noisy" if any(r[k]["noisy"] for k in r) else ""])
    print(table(f"lb-packet: ns per packet, medians of {runs} runs (established: {repeat} repeats each; "
                "new connection: median of 200 single runs)",
                ["services", "trivial", "established", "new conn", "est/trivial", "new/trivial", ""], rows))
    print()
    rows = [[n, r["model_s"]["median"], r["program_s"]["median"], r["total_s"]["median"],
             r["one_change_ms"]["median"], r["one_change_ms"]["max"],
             "noisy" if any(v["noisy"] for v in r.values()) else ""]
            for n, r in results["lb-sync"].items()]
    print(table(f"lb-sync: Services x {BACKENDS} backends from scratch, medians of {runs} runs "
                "(model: objects -> model; program: plan + map writes; "
                "goals: 10k programmed < 1 s, one change < 100 ms)",
                ["services", "model s", "program s", "total s", "one change ms", "max ms", ""], rows))
    return results
