"""NetworkPolicy: compile-and-write speed, time to effect, and per-packet cost.

  policy-sync    1,000 identities x 200 policies: the model compiled and every map
                 entry written from scratch (goal: under 1 s).
  policy-change  one pod label change, from the event until a packet through the
                 datapath (BPF_PROG_TEST_RUN) is allowed (goal: under 1 s).
  policy-packet  ns per packet into an isolated endpoint with 10 to 100,000 allow
                 entries in the map, against an endpoint no policy isolates and a
                 trivial program, all measured in the same run (goal: the cost
                 does not grow with the number of rules).
"""
from __future__ import annotations

import ipaddress
import random
import time

from agent.datapath.endpoint_map import EndpointMap, EndpointRecord
from agent.datapath.policy_maps import PolicyMaps
from agent.datapath.testrun import test_run
from agent.model.cluster import Cluster
from agent.model.identity import MemoryAllocator
from agent.model.policy import EGRESS, EP_F_INGRESS_ENFORCED, INGRESS, PolicyCompiler, PolicyState
from agent.sources.events import Event, EventType
from agent.sources.objects import ObjectKey
from tests import packets as pk

from .common import scratch_datapath, summarize, table, trivial_program

POD_BASE = ipaddress.IPv4Address("10.128.0.0")
NAMESPACES = 50
TEST_IFINDEX = 1  # BPF_PROG_TEST_RUN's device (loopback)
TC_ACT_OK = 0


def _event(obj: dict, type_=EventType.ADDED) -> Event:
    meta = obj["metadata"]
    return Event(type_, ObjectKey(obj["kind"], meta.get("namespace", ""), meta["name"]), obj)


def pod_object(i: int, labels: dict, node: str) -> dict:
    ns = f"ns-{i % NAMESPACES}"
    return {"kind": "Pod", "metadata": {"name": f"pod-{i}", "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": str(POD_BASE + i)}}


def cluster_events(identities: int, policies: int, local: int, rng: random.Random) -> list[Event]:
    """`identities` pods with distinct labels over 50 namespaces, `local` of them on
    this node, and `policies` policies mixing every selector and port form."""
    events = [_event({"kind": "Namespace", "metadata": {"name": f"ns-{n}", "labels": {
        "tier": ("front", "back", "data")[n % 3], "team": f"t{n % 7}"}}}) for n in range(NAMESPACES)]
    for i in range(identities):
        labels = {"app": f"app-{i}", "role": ("web", "api", "db", "cache")[i % 4], "shard": str(i % 10)}
        events.append(_event(pod_object(i, labels, "n1" if i < local else "n2")))
    for p in range(policies):
        role = ("web", "api", "db", "cache")[p % 4]
        block = rng.randrange(1, 100)
        peers = [
            [{"namespaceSelector": {"matchLabels": {"tier": "front"}}}],
            [{"podSelector": {"matchExpressions": [{"key": "shard", "operator": "In", "values": ["1", "2", "3"]}]}}],
            [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["t1"]}]},
              "podSelector": {"matchLabels": {"role": "api"}}}],
            [{"ipBlock": {"cidr": f"10.{block}.0.0/16", "except": [f"10.{block}.{p % 200}.0/24"]}}],
        ][p % 4]
        ports = [[{"port": 8080}], [{"port": "http"}], [{"port": 8000, "endPort": 8100}], []][p % 4]
        events.append(_event({"kind": "NetworkPolicy", "metadata": {"name": f"pol-{p}", "namespace": f"ns-{p % NAMESPACES}"},
                              "spec": {"podSelector": {"matchLabels": {"role": role}},
                                       "ingress": [{"from": peers, "ports": ports}]}}))
    return events


def sync_once(programs, identities: int, policies: int, local: int) -> dict:
    cluster = Cluster("n1")
    cluster.apply_all(cluster_events(identities, policies, local, random.Random(7)))
    locals_ = cluster.local_endpoints()
    ep_ids = {key: i + 1 for i, key in enumerate(sorted(locals_))}
    maps = PolicyMaps(programs)
    t0 = time.perf_counter()
    state = PolicyCompiler(MemoryAllocator()).compile(cluster, locals_)
    t1 = time.perf_counter()
    assert state.errors == [], state.errors[:3]
    maps.write(state, ep_ids)
    maps.prune()
    t2 = time.perf_counter()
    entries = len(maps.written_policy)
    maps.write(PolicyState(), {})
    maps.prune()
    return {"compile_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0, "entries": entries,
            "ipcache": len(state.ipcache), "identities": len(state.identities)}


def endpoint_record(state: PolicyState, key: str, ep_id: int, ip: str) -> EndpointRecord:
    """The endpoint as the agent's endpoint manager writes it."""
    return EndpointRecord(ep_id, ip, state.pod_identity[key], state.endpoint_flags[key],
                          state.prefixes(key, INGRESS), state.prefixes(key, EGRESS))


def label_change(programs, runs: int) -> list[float]:
    """Pod pod-1 (remote) gains the label a policy of local pod-0 allows: event -> packet passes."""
    cluster = Cluster("n1")
    cluster.apply_all(cluster_events(1000, 200, 100, random.Random(7)))
    allow = {"kind": "NetworkPolicy", "metadata": {"name": "allow-trusted", "namespace": "ns-0"},
             "spec": {"podSelector": {"matchLabels": {"app": "app-0"}},
                      "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"trusted": "yes"}}}]}]}}
    cluster.apply(_event(allow))
    compiler, maps = PolicyCompiler(MemoryAllocator()), PolicyMaps(programs)
    endpoints = EndpointMap(programs.table("weft_endpoints"), programs.config.endpoint_map_size)
    locals_ = cluster.local_endpoints()
    ep_ids = {key: i + 1 for i, key in enumerate(sorted(locals_))}
    state = compiler.compile(cluster, locals_)
    maps.write(state, ep_ids)
    maps.prune()
    local_key = "ns-0/pod-0"
    endpoints.write(TEST_IFINDEX, endpoint_record(state, local_key, ep_ids[local_key], str(POD_BASE)))
    samples = []
    peer = 1001
    for run in range(runs):
        remote = pod_object(peer + run * NAMESPACES, {"app": f"late-{run}"}, "n2")
        cluster.apply(_event(remote))
        state = compiler.compile(cluster, locals_)
        maps.write(state, ep_ids)
        maps.prune()
        packet = pk.tcp_packet(remote["status"]["podIP"], str(POD_BASE), 40000 + run, 8080)
        assert test_run(programs.to_pod.fd, packet).retval != TC_ACT_OK, "denied before the change"
        relabeled = {**remote, "metadata": {**remote["metadata"], "labels": {"app": f"late-{run}", "trusted": "yes"}}}
        start = time.perf_counter()
        cluster.apply(_event(relabeled, EventType.MODIFIED))
        state = compiler.compile(cluster, locals_)
        maps.write(state, ep_ids)
        endpoints.write(TEST_IFINDEX, endpoint_record(state, local_key, ep_ids[local_key], str(POD_BASE)))
        maps.prune()
        while test_run(programs.to_pod.fd, packet).retval != TC_ACT_OK:
            pass
        samples.append((time.perf_counter() - start) * 1000)
    endpoints.delete(TEST_IFINDEX)
    maps.write(PolicyState(), {})
    maps.prune()
    programs.table("weft_ct").clear()
    return samples


def packet_cost(programs, entries: int, repeat: int, runs: int, trivial_fd: int) -> dict:
    """An established connection into an isolated endpoint among `entries` allow entries."""
    ep_id, peer, local, peer_identity = 5, "10.77.0.2", "10.66.0.2", 300
    state = PolicyState()
    state.ipcache[(peer, 32)] = (peer_identity, 2)
    rng = random.Random(entries)
    for i in range(entries - 1):  # other peers' rules on other ports, as a large policy has
        state.entries[("ep", 1000 + i, INGRESS, 6, rng.randrange(1, 65536), 16)] = 1
    state.entries[("ep", peer_identity, INGRESS, 6, 8080, 16)] = 1
    maps = PolicyMaps(programs)
    maps.write(state, {"ep": ep_id})
    endpoints = EndpointMap(programs.table("weft_endpoints"), programs.config.endpoint_map_size)
    packet = pk.tcp_packet(peer, local, 45000, 8080, flags=pk.TCP_ACK)
    floor, open_, isolated = [], [], []
    for _ in range(runs):
        floor.append(test_run(trivial_fd, packet, repeat).duration_ns)
        endpoints.write(TEST_IFINDEX, EndpointRecord(ep_id, local, 0, 0))
        open_.append(test_run(programs.to_pod.fd, packet, repeat).duration_ns)
        endpoints.write(TEST_IFINDEX, EndpointRecord(ep_id, local, 0, EP_F_INGRESS_ENFORCED,
                                                     ingress_prefixes=1 << 16))
        result = test_run(programs.to_pod.fd, packet, repeat)
        assert result.retval == TC_ACT_OK
        isolated.append(result.duration_ns)
    endpoints.delete(TEST_IFINDEX)
    maps.write(PolicyState(), {})
    maps.prune()
    programs.table("weft_ct").clear()
    return {"trivial_ns": summarize(floor), "no_policy_ns": summarize(open_), "policy_ns": summarize(isolated)}


def run(quick: bool) -> dict:
    runs = 3 if quick else 5
    repeat = 20000 if quick else 100000
    scales = [10, 1000, 10000] if quick else [10, 1000, 10000, 100000]
    results: dict = {"policy-sync": {}, "policy-change": {}, "policy-packet": {}}
    with scratch_datapath(ct_map_size=65536, policy_map_size=262144) as programs:
        bpf, trivial = trivial_program()
        try:
            samples = [sync_once(programs, 1000, 200, 100) for _ in range(runs)]
            results["policy-sync"] = {**{k: summarize([s[k] for s in samples])
                                         for k in ("compile_s", "write_s", "total_s")},
                                      **{k: samples[0][k] for k in ("entries", "ipcache", "identities")}}
            results["policy-change"] = {"effect_ms": summarize(label_change(programs, runs))}
            for n in scales:
                results["policy-packet"][n] = packet_cost(programs, n, repeat, runs, trivial.fd)
        finally:
            bpf.cleanup()
    s = results["policy-sync"]
    print(table(f"policy-sync: {s['identities']} identities x 200 policies, 100 local endpoints, from scratch; "
                f"medians of {runs} runs (goal: total < 1 s)",
                ["entries", "ipcache", "compile s", "write s", "total s", "max total s", ""],
                [[s["entries"], s["ipcache"], s["compile_s"]["median"], s["write_s"]["median"],
                  s["total_s"]["median"], s["total_s"]["max"], "noisy" if s["total_s"]["noisy"] else ""]]))
    print()
    c = results["policy-change"]["effect_ms"]
    print(table(f"policy-change: one label change among 1,000 identities, event -> packet allowed; "
                f"{runs} runs (goal: < 1000 ms)", ["median ms", "min ms", "max ms"],
                [[c["median"], c["min"], c["max"]]]))
    print()
    rows = []
    for n, r in results["policy-packet"].items():
        t, o, p = (r[k]["median"] for k in ("trivial_ns", "no_policy_ns", "policy_ns"))
        rows.append([n, t, o, p, round(p / t, 2), round(p / o, 2), "noisy" if any(r[k]["noisy"] for k in r) else ""])
    base = rows[0][3]
    for row in rows:
        row.insert(6, round(row[3] / base, 2))
    print(table(f"policy-packet: ns per established packet into an endpoint, medians of {runs} runs of "
                f"{repeat} repeats (goal: policy ns flat as entries grow)",
                ["entries", "trivial", "no policy", "policy", "policy/trivial", "policy/no policy",
                 f"vs {scales[0]} entries", ""], rows))
    return results
