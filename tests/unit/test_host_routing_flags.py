"""--host-routing and --ipv4-native-routing-cidr: what the agent compiles the datapath with,
and a CIDR that is not one refused before the agent starts."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent.main import main


class Stop(Exception):
    pass


def datapath_config(tmp_path, monkeypatch, *flags: str):
    import agent.daemon

    seen = {}

    def capture(options):
        seen["datapath"] = options.datapath
        raise Stop

    monkeypatch.setattr(agent.daemon, "Agent", capture)
    (tmp_path / "manifests").mkdir(exist_ok=True)
    result = CliRunner().invoke(main, ["--node-name", "n", "--manifests", str(tmp_path / "manifests"), *flags])
    assert isinstance(result.exception, Stop), result.output
    return seen["datapath"]


def test_host_routing_is_on_by_default_for_local_pods_only(tmp_path, monkeypatch):
    cflags = datapath_config(tmp_path, monkeypatch).cflags()
    assert "-DWEFT_HOST_ROUTING=1" in cflags
    assert not [f for f in cflags if f.startswith("-DWEFT_NATIVE_ROUTING")]


def test_legacy_routing_compiles_host_routing_out(tmp_path, monkeypatch):
    assert "-DWEFT_HOST_ROUTING=0" in datapath_config(tmp_path, monkeypatch, "--host-routing", "legacy").cflags()


def test_the_native_routing_cidr_becomes_a_network_and_mask(tmp_path, monkeypatch):
    cflags = datapath_config(tmp_path, monkeypatch, "--ipv4-native-routing-cidr", "10.244.0.0/16").cflags()
    assert "-DWEFT_NATIVE_ROUTING_NET=0x0af40000U" in cflags
    assert "-DWEFT_NATIVE_ROUTING_MASK=0xffff0000U" in cflags


@pytest.mark.parametrize("cidr", ["10.244.1.7/16", "10.244.0.0/33", "pods"])
def test_a_cidr_that_is_not_one_is_refused(tmp_path, cidr):
    (tmp_path / "manifests").mkdir()
    result = CliRunner().invoke(main, ["--node-name", "n", "--manifests", str(tmp_path / "manifests"),
                                       "--ipv4-native-routing-cidr", cidr])
    assert result.exit_code == 2
    assert "--ipv4-native-routing-cidr" in result.output
