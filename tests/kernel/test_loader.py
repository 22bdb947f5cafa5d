"""The loader: compile errors an operator can act on, versioned pins, TC attach."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from agent.datapath import tc
from agent.datapath.errors import CompileError
from agent.datapath.loader import compile_source, unpin_node

from .conftest import TEST_PIN_ROOT

pytestmark = pytest.mark.kernel


def test_compile_error_names_program_cflags_and_compiler_message(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "broken.h").write_text("static int f(void) { return undefined_thing; }\n")
    (tmp_path / "prog.c").write_text('#include "lib/broken.h"\nint g(void *ctx) { return f(); }\n')
    with pytest.raises(CompileError) as info:
        compile_source(tmp_path / "prog.c", ["-DWEFT_TEST=1"])
    err = info.value
    assert err.source == "prog.c" and "-DWEFT_TEST=1" in str(err)
    # the message points at the real header and line, not at an assembled blob
    assert f"{tmp_path / 'lib' / 'broken.h'}:1" in err.output
    assert "undefined_thing" in err.output


def test_maps_pinned_in_a_versioned_per_node_directory(pod_programs):
    pins = pod_programs.config.pin_dir
    assert pins.parent.parent == TEST_PIN_ROOT and pins.name.startswith("v")
    assert {p.name for p in pins.iterdir()} >= {"weft_ct", "weft_endpoints", "weft_metrics", "weft_flow_lost"}


def test_pinned_maps_are_reused_by_a_second_load(pod_programs):
    """A restarted agent finds what the previous one wrote (no flush on restart)."""
    from agent.datapath.loader import PodPrograms

    ep = pod_programs.table("weft_endpoints")
    leaf = ep.Leaf()
    leaf.ep_id = 77
    ep[ep.Key(4242)] = leaf
    second = PodPrograms(pod_programs.config)
    try:
        again = second.table("weft_endpoints")
        assert again[again.Key(4242)].ep_id == 77
    finally:
        del ep[ep.Key(4242)]
        second.close()


def test_a_map_pinned_at_another_size_keeps_its_size_and_says_so():
    """A restart with a new --ct-map-size keeps the live conntrack map: the agent
    sizes its reads and capacity metrics by the pin, and names the difference."""
    from agent.datapath.loader import DatapathConfig, PodPrograms
    from agent.datapath.maps import lookup_all

    config = DatapathConfig(node=f"resize-{uuid.uuid4().hex[:6]}", pin_root=TEST_PIN_ROOT, ct_map_size=4096)
    first = PodPrograms(config)
    second = None
    try:
        ct = first.table("weft_ct")
        for port in range(3000):
            key = ct.Key()
            key.sport, key.proto = port, 6
            ct[key] = ct.Leaf()
        smaller = DatapathConfig(node=config.node, pin_root=TEST_PIN_ROOT, ct_map_size=2048)
        second = PodPrograms(smaller)
        assert second.table("weft_ct").max_entries == 2048, "BCC reports the size compiled in"
        assert second.capacity("weft_ct") == 4096
        assert second.pins_unlike_config(["weft_ct", "weft_endpoints"]) == {
            "weft_ct": ["4096 entries, not the 2048 configured"]}
        found = lookup_all(second.table("weft_ct"))
        assert found is not None and found[2] == 3000, "every entry read, beyond the configured size"
    finally:
        if second is not None:
            second.close()
        first.close()
        unpin_node(config.node, TEST_PIN_ROOT)


def test_per_cpu_lru_lists_reach_the_kernel_and_a_restart_says_when_the_pin_differs():
    """--ct-map-lru=per-cpu: the kernel's conntrack map has a list per CPU and
    tracks connections as before; a restart configured otherwise keeps the
    pin (its entries are live connections) and names the difference."""
    from agent.datapath.loader import BPF_F_NO_COMMON_LRU, DatapathConfig, PodPrograms
    from agent.datapath.maps import lookup_all, map_info

    config = DatapathConfig(node=f"lru-{uuid.uuid4().hex[:6]}", pin_root=TEST_PIN_ROOT, ct_map_size=4096,
                            ct_map_per_cpu_lru=True)
    first = PodPrograms(config)
    second = None
    try:
        ct = first.table("weft_ct")
        assert map_info(first.map_fd("weft_ct")).map_flags & BPF_F_NO_COMMON_LRU
        for port in range(100):  # within one CPU's share on a node of up to 40 possible CPUs
            key = ct.Key()
            key.sport, key.proto = port, 6
            ct[key] = ct.Leaf()
        found = lookup_all(ct)
        assert found is not None and found[2] == 100
        assert first.pins_unlike_config(["weft_ct"]) == {}
        second = PodPrograms(DatapathConfig(node=config.node, pin_root=TEST_PIN_ROOT, ct_map_size=4096))
        assert second.pins_unlike_config(["weft_ct"]) == {
            "weft_ct": ["per-CPU LRU lists, not the common configured"]}
    finally:
        if second is not None:
            second.close()
        first.close()
        unpin_node(config.node, TEST_PIN_ROOT)


def test_unpin_removes_every_version_of_one_node_only(tmp_path):
    root = Path("/sys/fs/bpf") / f"weft-unpin-{uuid.uuid4().hex[:8]}"
    try:
        for node in ("n1", "n2"):
            (root / node / "v1").mkdir(parents=True)
        assert unpin_node("n1", root)
        assert not (root / "n1").exists() and (root / "n2" / "v1").exists()
        assert not unpin_node("n1", root)
        unpin_node("n2", root)
        assert not root.exists()
    finally:
        subprocess.run(["rm", "-rf", str(root)])


@pytest.fixture
def veth_ns():
    name = f"weft-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "add", "name", "host0", "type", "veth", "peer", "name", "pod0"],
                   check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name])


def test_attach_replaces_in_place_and_detach_removes(pod_programs, veth_ns):
    from pyroute2 import NetNS

    with NetNS(veth_ns) as ipr:
        idx = ipr.link_lookup(ifname="host0")[0]
        for _ in range(2):  # attaching twice must replace, not stack
            tc.attach(ipr, idx, tc.INGRESS, pod_programs.from_pod.fd, "from_pod")
            tc.attach(ipr, idx, tc.EGRESS, pod_programs.to_pod.fd, "to_pod")
        assert tc.attached_names(ipr, idx, tc.INGRESS) == ["from_pod"]
        assert tc.attached_names(ipr, idx, tc.EGRESS) == ["to_pod"]
        tc.detach(ipr, idx)
        assert tc.attached_names(ipr, idx, tc.INGRESS) == []
        tc.detach(ipr, idx)  # detaching what is not there is fine


def test_full_endpoint_map_is_an_error_naming_the_map():
    from agent.datapath.endpoint_map import EndpointMap, EndpointRecord
    from agent.datapath.errors import MapFullError
    from agent.datapath.loader import DatapathConfig, PodPrograms

    config = DatapathConfig(node=f"full-{uuid.uuid4().hex[:6]}", pin_root=TEST_PIN_ROOT, endpoint_map_size=2)
    programs = PodPrograms(config)
    try:
        endpoints = EndpointMap(programs.table("weft_endpoints"), 2)
        endpoints.write(10, EndpointRecord(1, "10.0.0.1"))
        endpoints.write(11, EndpointRecord(2, "10.0.0.2"))
        with pytest.raises(MapFullError, match=r"BPF map weft_endpoints is full \(2 entries\)"):
            endpoints.write(12, EndpointRecord(3, "10.0.0.3"))
        endpoints.write(11, EndpointRecord(2, "10.0.0.9"))  # updating in place still works
        assert endpoints.read()[11].ipv4 == "10.0.0.9"
    finally:
        programs.close()
        unpin_node(config.node, TEST_PIN_ROOT)
