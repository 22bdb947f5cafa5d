"""The benchmark's peers are built from one catalog: every Service and endpoint
reaches each of them, in the layout kube-proxy writes."""
from __future__ import annotations

import re

from bench import kubeproxy


def test_every_service_and_endpoint_is_in_every_peer():
    services = kubeproxy.catalog(3)
    ipt, nft, weft = (kubeproxy.iptables_full(services), kubeproxy.nft_full(services),
                      kubeproxy.weft_objects(services))
    slices = {o["metadata"]["labels"]["kubernetes.io/service-name"]: o for o in weft if o["kind"] == "EndpointSlice"}
    for s in services:
        assert f"-d {s.vip}/32 --dport {s.port} -j {kubeproxy.svc_chain(s)}" in ipt
        assert f"{s.vip} . tcp . {s.port} : goto service-" in nft
        assert [e["addresses"][0] for e in slices[s.name]["endpoints"]] == list(s.endpoints)
        for ep in s.endpoints:
            assert f"--to-destination {ep}:{s.target_port}" in ipt
            assert f"dnat to {ep}:{s.target_port}" in nft


def test_iptables_picks_endpoints_with_kube_proxys_probabilities_in_catalog_order():
    services = kubeproxy.catalog(2)
    ipt = kubeproxy.iptables_full(services)
    picks = re.findall(rf"-A {kubeproxy.svc_chain(services[0])} .*?-j (KUBE-SEP-\w+)", ipt)
    assert len(picks) == 2 and "--probability 0.5000000000" in ipt
    jumps = re.findall(r"-A KUBE-SERVICES .* -j (KUBE-SVC-\w+)", ipt)
    assert jumps == [kubeproxy.svc_chain(s) for s in services]
    assert re.fullmatch(r"KUBE-SVC-[A-Z2-7]{16}", jumps[0]), "kube-proxy's chain names: 16 base32 characters"


def test_a_change_rewrites_kube_services_whole_and_adds_only_the_new_chains():
    services = kubeproxy.catalog(2)
    added = kubeproxy.extra_service(0)
    change = kubeproxy.iptables_change(services, added)
    assert change.count("-A KUBE-SERVICES") == len(services) + 2  # every Service, the new one, NodePorts
    assert kubeproxy.svc_chain(services[0]) not in change.replace(f"-j {kubeproxy.svc_chain(services[0])}", "")
    assert f"--to-destination {added.endpoints[0]}:{added.target_port}" in change


def test_json_keys_figures_by_benchmark_id_and_keeps_the_rest():
    from bench.__main__ import by_benchmark_id

    out = by_benchmark_id({"datapaths": {"B2": {"P0": {}}, "B3": {"P3": {}}, "skipped": {"P1": "slow"},
                                         "P3_socket_lb_translations": 12}})
    assert out["B2"] == {"P0": {}} and out["B3"] == {"P3": {}}
    assert out["other"] == {"datapaths.skipped": {"P1": "slow"}, "datapaths.P3_socket_lb_translations": 12}
