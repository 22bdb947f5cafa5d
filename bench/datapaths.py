"""Weft against what an operator would run instead, on the same catalog of Services.

  B2  connect() latency (SYN to SYN-ACK through the node) p50 / p99, with the
      probed Service first, at a random place and last in the rule order
  B3  short-connection requests per second (a new connection per request,
      4 client processes)
  B4  keep-alive request/answer round-trip latency (one connection)
  B5  bulk throughput (iperf3) and CPU seconds, whole machine, per GB moved
  B6  control plane: every Service programmed from scratch and one Service
      added; time to effect is when a client first connects through the
      datapath (a probe connecting every millisecond), not when a command returned

Peers (bench/peers.py): P0 the client connects straight to an endpoint; P1
kube-proxy's iptables rules; P2 kube-proxy's nftables rules; P3 Weft's agent.
B4 and B5 run at one scale (10,000 Services; 1,000 with --quick). Peers are
interleaved within each repetition, their order rotated between repetitions.
"""
from __future__ import annotations

import random
import time

from . import kubeproxy, netlab, peers, traffic
from .common import percentile, rotated, summarize, table

SCALES, QUICK_SCALES = [100, 1000, 10000, 30000], [100, 1000]
POSITIONS = ("first", "random", "last")


def probed(services: list[kubeproxy.Service], n: int) -> dict[str, kubeproxy.Service]:
    """The bulk Service is first in rule order; the n ClusterIP Services follow."""
    return {"first": services[1], "random": services[1 + random.Random(n).randrange(n)], "last": services[-1]}


SLOW_SYNC_S = 30  # a full sync slower than this is measured once, not every repetition
SYNC_BUDGET_S = 300  # a peer whose full sync would take longer is left out of larger scales


def time_to_effect(loadgen: str, peer, target: kubeproxy.Service, change) -> dict:
    proc = traffic.start_probe(loadgen, netlab.client_ns(peer.peer), *peer.target(target), 3600)
    time.sleep(0.05)  # the probe is connecting (and failing) before the change starts
    t0 = time.monotonic_ns()
    change()
    command_s = (time.monotonic_ns() - t0) / 1e9
    answered = traffic.probe_answered_ns(proc, 30)
    if answered is None:
        raise RuntimeError(f"{peer.peer}: {target.name} did not answer within 30 s of the change")
    return {"command_s": command_s, "effect_s": (answered - t0) / 1e9}


def control_plane(loadgen: str, active: list, services: list, reps: int) -> dict:
    """B6 for P1-P3; leaves every peer programmed with `services`."""
    samples: dict[str, dict[str, list[float]]] = {}
    for rep in range(reps):
        for peer in rotated([p for p in active if p.peer != "P0"], rep):
            s = samples.setdefault(peer.peer, {k: [] for k in ("sync_command_s", "sync_effect_s",
                                                               "change_command_s", "change_effect_s")})
            if s["sync_effect_s"] and s["sync_effect_s"][0] > SLOW_SYNC_S:
                continue
            peer.clear()
            peer.prepare(services)
            full = time_to_effect(loadgen, peer, services[-1], lambda: peer.sync(services))
            added = kubeproxy.extra_service(rep)
            one = time_to_effect(loadgen, peer, added, lambda: peer.add(services, added))
            peer.remove(services, added)
            s["sync_command_s"].append(full["command_s"])
            s["sync_effect_s"].append(full["effect_s"])
            s["change_command_s"].append(one["command_s"])
            s["change_effect_s"].append(one["effect_s"])
    return {p: {k: summarize(v) for k, v in s.items()} for p, s in samples.items()}


def connect_latency(loadgen: str, all_peers: list, targets: dict, reps: int, count: int) -> dict:
    p50: dict = {}
    for rep in range(reps):
        # the rows' order rotates too: the row measured first in every repetition ran
        # faster for every peer (P0 by a third), which no Service's place explains
        for position, service in rotated(list(targets.items()), rep):
            for peer in rotated(all_peers, rep):
                got, failed = traffic.connect_latencies(loadgen, netlab.client_ns(peer.peer),
                                                        *peer.target(service), count)
                r = p50.setdefault(peer.peer, {}).setdefault(position, {"p50_us": [], "p99_us": [], "failed": 0})
                r["p50_us"].append(percentile(got, 0.5) / 1000)
                r["p99_us"].append(percentile(got, 0.99) / 1000)
                r["failed"] += failed
    return {peer: {pos: {"p50_us": summarize(r["p50_us"]), "p99_us": summarize(r["p99_us"]), "failed": r["failed"]}
                   for pos, r in by_pos.items()} for peer, by_pos in p50.items()}


def short_connections(loadgen: str, all_peers: list, service, reps: int, seconds: float) -> dict:
    rates: dict[str, list[float]] = {}
    failures: dict[str, int] = {}
    for rep in range(reps):
        for peer in rotated(all_peers, rep):
            ok, failed = traffic.short_requests(loadgen, netlab.client_ns(peer.peer), *peer.target(service), seconds, 4)
            rates.setdefault(peer.peer, []).append(ok / seconds)
            failures[peer.peer] = failures.get(peer.peer, 0) + failed
    return {p: {"rps": summarize(r), "failed": failures[p]} for p, r in rates.items()}


def keepalive_and_bulk(loadgen: str, all_peers: list, service, bulk_service, reps: int, quick: bool) -> tuple:
    rtt: dict[str, dict[str, list[float]]] = {}
    bulk: dict[str, dict[str, list[float]]] = {}
    for rep in range(reps):
        for peer in rotated(all_peers, rep):
            got = traffic.round_trips(loadgen, netlab.client_ns(peer.peer), *peer.target(service),
                                      5000 if quick else 20000)
            r = rtt.setdefault(peer.peer, {"p50_us": [], "p99_us": []})
            r["p50_us"].append(percentile(got, 0.5) / 1000)
            r["p99_us"].append(percentile(got, 0.99) / 1000)
            b = traffic.bulk(netlab.client_ns(peer.peer), *peer.target(bulk_service), 2 if quick else 5)
            for k, v in b.items():
                bulk.setdefault(peer.peer, {}).setdefault(k, []).append(v)
    return ({p: {k: summarize(v) for k, v in r.items()} for p, r in rtt.items()},
            {p: {k: summarize(v) for k, v in r.items()} for p, r in bulk.items()})


def run(quick: bool) -> dict:
    missing = traffic.missing_tools()
    if missing:
        print(f"datapaths: skipped, missing {', '.join(missing)} (scripts/setup --bench installs them)")
        return {}
    scales, reps = (QUICK_SCALES, 3) if quick else (SCALES, 5)
    results: dict = {"B2": {}, "B3": {}, "B4": {}, "B5": {}, "B6": {}}
    netlab.build()
    loadgen = traffic.build()
    servers = traffic.Servers(loadgen, kubeproxy.TARGET_PORT, kubeproxy.BULK_PORT)
    all_peers: list = []
    skipped: dict[str, str] = {}
    try:
        all_peers = peers.all_peers()
        for n in scales:
            catalog = kubeproxy.catalog(n)
            services = [catalog[-1]] + catalog[:-1]  # bulk first: the probed ones are first..last of n
            targets = probed(services, n)
            for peer in all_peers:
                if peer.peer not in skipped and peer.peer != "P0":
                    last = max(results["B6"].get(peer.peer, {0: None}))
                    if last and results["B6"][peer.peer][last]["sync_effect_s"]["median"] * n / last > SYNC_BUDGET_S:
                        skipped[peer.peer] = (f"left out from {n} Services: its full sync of {last} took "
                                              f"{results['B6'][peer.peer][last]['sync_effect_s']['median']:.0f} s")
                        peer.clear()
            active = [p for p in all_peers if p.peer not in skipped]
            for bid, figures in (("B6", control_plane(loadgen, active, services, reps)),
                                 ("B2", connect_latency(loadgen, active, targets, reps, 300 if quick else 1000)),
                                 ("B3", short_connections(loadgen, active, targets["random"], reps,
                                                          1.0 if quick else 3.0))):
                for peer, r in figures.items():
                    results[bid].setdefault(peer, {})[n] = r
            if n == (scales[-1] if quick else 10000):
                rtt, bulk = keepalive_and_bulk(loadgen, active, targets["random"], services[0], reps, quick)
                for bid, figures in (("B4", rtt), ("B5", bulk)):
                    for peer, r in figures.items():
                        results[bid].setdefault(peer, {})[n] = r
        weft = next((p for p in all_peers if p.peer == "P3"), None)
        if weft is not None:
            results["P3_socket_lb_translations"] = weft.socket_translations()
    finally:
        for peer in all_peers:
            peer.close()
        servers.close()
        netlab.teardown()
        traffic.remove(loadgen)
    results["skipped"] = skipped
    add_ratios(results)
    print_tables(results, reps)
    return results


def add_ratios(results: dict) -> None:
    """Each peer's median against P0's (B2-B5) and P1's (B6), beside its figures."""
    def ratio(figures: dict, peer: str, base: str, path: tuple) -> None:
        for n, r in figures.get(peer, {}).items():
            b = figures.get(base, {}).get(n)
            if b is None:
                continue
            mine, theirs = r, b
            for key in path[:-1]:
                mine, theirs = mine[key], theirs[key]
            if theirs[path[-1]]["median"]:
                mine[f"{path[-1]}_vs_{base}"] = round(mine[path[-1]]["median"] / theirs[path[-1]]["median"], 4)

    for peer in netlab.PEERS:
        for pos in POSITIONS:
            for stat in ("p50_us", "p99_us"):
                ratio(results["B2"], peer, "P0", (pos, stat))
        ratio(results["B3"], peer, "P0", ("rps",))
        ratio(results["B4"], peer, "P0", ("p50_us",))
        ratio(results["B5"], peer, "P0", ("gbit_s",))
        for stat in ("sync_effect_s", "change_effect_s"):
            ratio(results["B6"], peer, "P1", (stat,))


def _noisy(*summaries: dict) -> str:
    return "noisy" if any(s["noisy"] for s in summaries) else ""


def _ratio(a: float | None, b: float | None, digits: int = 2):
    return round(a / b, digits) if a and b else "-"


def _at(figures: dict, peer: str, n: int) -> dict | None:
    return figures.get(peer, {}).get(n)


def print_tables(results: dict, reps: int) -> None:
    b2, b3, b4, b5, b6 = (results[k] for k in ("B2", "B3", "B4", "B5", "B6"))
    rows = []
    for n in b2["P0"]:
        for pos in POSITIONS:
            med = {p: r[pos]["p50_us"]["median"] for p in netlab.PEERS if (r := _at(b2, p, n))}
            p99 = {p: r[pos]["p99_us"]["median"] for p in netlab.PEERS if (r := _at(b2, p, n))}
            rows.append([n, pos, *(f"{med[p]:.1f} / {p99[p]:.0f}" if p in med else "-" for p in netlab.PEERS),
                         _ratio(med.get("P3"), med.get("P0")), _ratio(med.get("P1"), med.get("P3")),
                         _noisy(*(_at(b2, p, n)[pos]["p50_us"] for p in med))])
    print(table(f"B2: connect latency, us p50 / p99, medians of {reps} runs "
                "(goals at 10k: P3/P0 <= 1.1, P1/P3 >= 3)",
                ["services", "probed", *(f"{p} {k}" for p, k in netlab.PEERS.items()), "P3/P0", "P1/P3", ""], rows))
    print()
    rows = []
    for n in b3["P0"]:
        rps = {p: r["rps"]["median"] for p in netlab.PEERS if (r := _at(b3, p, n))}
        rows.append([n, *(round(rps[p]) if p in rps else "-" for p in netlab.PEERS),
                     _ratio(rps.get("P3"), rps.get("P0"), 3), sum(_at(b3, p, n)["failed"] for p in rps),
                     _noisy(*(_at(b3, p, n)["rps"] for p in rps))])
    print(table(f"B3: short-connection requests/s, 4 clients, medians of {reps} runs (goal at 10k: P3/P0 >= 0.9)",
                ["services", *(f"{p} {k}" for p, k in netlab.PEERS.items()), "P3/P0", "failed", ""], rows))
    print()
    for n in b4.get("P0", {}):
        base = b5["P0"][n]["gbit_s"]["median"]
        rows = [[p, kind, round(_at(b4, p, n)["p50_us"]["median"], 1), round(_at(b4, p, n)["p99_us"]["median"], 1),
                 round(_at(b5, p, n)["gbit_s"]["median"], 2), round(_at(b5, p, n)["cpu_s_per_gb"]["median"], 3),
                 _ratio(_at(b5, p, n)["gbit_s"]["median"], base, 3),
                 _noisy(_at(b4, p, n)["p50_us"], _at(b5, p, n)["gbit_s"])]
                for p, kind in netlab.PEERS.items() if _at(b4, p, n)]
        print(table(f"B4/B5 at {n} Services: keep-alive round trip us, iperf3 bulk, medians of {reps} runs "
                    "(goal: P3 bulk >= 0.97 x P0)",
                    ["peer", "", "rtt p50", "rtt p99", "Gbit/s", "CPU s/GB", "x P0", ""], rows))
        print()
    rows = [[n, p, round(r["sync_command_s"]["median"], 3), round(r["sync_effect_s"]["median"], 3),
             round(r["change_command_s"]["median"] * 1000, 1), round(r["change_effect_s"]["median"] * 1000, 1),
             r["sync_effect_s"]["runs"], _noisy(r["sync_effect_s"], r["change_effect_s"])]
            for n in b6.get("P3", {}) for p in ("P1", "P2", "P3") if (r := _at(b6, p, n))]
    print(table(f"B6: control plane, medians (goals at 10k: P3 full sync < 1 s and faster than P1; one change "
                f"in the datapath < 100 ms; a full sync over {SLOW_SYNC_S} s is measured once)",
                ["services", "peer", "sync cmd s", "sync effect s", "change cmd ms", "change effect ms", "runs", ""],
                rows))
    for peer, reason in results.get("skipped", {}).items():
        print(f"{peer}: {reason}")
    if "P3_socket_lb_translations" in results:
        print(f"P3: {results['P3_socket_lb_translations']} connections given their backend at connect() "
              "(0: every one translated per packet)")
