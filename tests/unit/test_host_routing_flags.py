"""--host-routing and --ipv4-native-routing-cidr: what the agent compiles the datapath with,
and a CIDR that is not one refused before the agent starts."""
from __future__ import annotations

import pytest

from .agent_cli import agent_options, invoke


def cflags(tmp_path, monkeypatch, *flags: str) -> list[str]:
    return agent_options(tmp_path, monkeypatch, *flags).datapath.cflags()


def test_host_routing_is_on_by_default_for_local_pods_only(tmp_path, monkeypatch):
    compiled = cflags(tmp_path, monkeypatch)
    assert "-DWEFT_HOST_ROUTING=1" in compiled
    assert not [f for f in compiled if f.startswith("-DWEFT_NATIVE_ROUTING")]


def test_legacy_routing_compiles_host_routing_out(tmp_path, monkeypatch):
    assert "-DWEFT_HOST_ROUTING=0" in cflags(tmp_path, monkeypatch, "--host-routing", "legacy")


def test_the_native_routing_cidr_becomes_a_network_and_mask(tmp_path, monkeypatch):
    compiled = cflags(tmp_path, monkeypatch, "--ipv4-native-routing-cidr", "10.244.0.0/16")
    assert "-DWEFT_NATIVE_ROUTING_NET=0x0af40000U" in compiled
    assert "-DWEFT_NATIVE_ROUTING_MASK=0xffff0000U" in compiled


@pytest.mark.parametrize("cidr", ["10.244.1.7/16", "10.244.0.0/33", "pods"])
def test_a_cidr_that_is_not_one_is_refused(tmp_path, cidr):
    result = invoke(tmp_path, "--ipv4-native-routing-cidr", cidr)
    assert result.exit_code == 2
    assert "--ipv4-native-routing-cidr" in result.output
