"""Agents SIGKILLed and started again, and upgraded to a new ABI version,
while traffic flows through a ClusterIP under a NetworkPolicy: the datapath is
pinned and attached, so nothing the operator can see changes. No new connection
fails, no established one is reset, the policy keeps the bystander out
throughout, and flows resume.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpf import SOURCE_DIR

from .lab import MESHCTL, MANIFESTS, down_if_up, flows, meshctl, pods, up_or_skip

pytestmark = pytest.mark.kernel
TRAFFIC = str(Path(__file__).resolve().parent / "traffic.py")
DURATION = 30.0


@pytest.fixture(scope="module")
def lab():
    up_or_skip(2, MANIFESTS / "restart.yaml")
    yield
    down_if_up()


def vip() -> str:
    services = json.loads(meshctl("lab", "get", "services", "-o", "json").stdout)["items"]
    return next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == "web")


def traffic(pod: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", f"weft-pod-r-{pod}", sys.executable, TRAFFIC, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=DURATION + 60)
    assert proc.returncode == 0, err
    return json.loads(out)


class Load:
    """The client's traffic (50 new connections a second, 4 kept open) and the
    bystander's attempts, for DURATION seconds."""

    def __enter__(self):
        ip = vip()
        assert pods()["r/client"]["spec"]["nodeName"] == "node-1"
        self.client = traffic("client", ip, "80", "--duration", str(DURATION), "--interval", "0.02",
                              "--keepalive", "4")
        # the bystander's SYNs are dropped, so each attempt waits out its timeout
        self.bystander = traffic("bystander", ip, "80", "--duration", str(DURATION), "--interval", "0.05",
                                 "--timeout", "0.3")
        time.sleep(3)
        return self

    def __exit__(self, *exc):
        self.seen, self.kept_out = result(self.client), result(self.bystander)["new"]

    def assert_nothing_broke(self) -> None:
        new, kept, kept_out = self.seen["new"], self.seen["keepalive"], self.kept_out
        assert new["attempts"] > 300 and new["failures"] == [], f"new connections failed: {new['failures'][:5]}"
        assert kept["attempts"] > 400 and kept["failures"] == [], \
            f"an open connection broke: {kept['failures'][:5]}"
        assert kept_out["attempts"] > 20 and kept_out["ok"] == 0, "the bystander got through"


def test_sigkilled_agents_break_no_connection_and_keep_the_policy(lab):
    with Load() as load:
        killed_at = time.time()
        meshctl("lab", "restart-agent", "--kill", "--down-for", "3")
        restarted_at = time.time()
        meshctl("lab", "restart-agent", "node-2", "--kill")
    assert restarted_at - killed_at > 3, "both agents were down while traffic flowed"
    load.assert_nothing_broke()

    after = [f for f in flows("--from-pod", "r/client", "--since", f"{int(time.time() - restarted_at) + 1}s",
                              "--last", "1000")
             if "flow" in f]
    assert after, "flows resume once the agents are back"
    stopped = [f for f in flows("--from-pod", "r/bystander", "--verdict", "dropped", "--last", "1000")
               if "flow" in f]
    assert stopped, "the bystander's drops are reported"


def next_abi(tmp_path: Path, changed_maps: list[str]) -> tuple[Path, int]:
    """bpf/ as the next ABI version would ship it: the version bumped, and the
    named maps marked as changed in layout (so the upgrade rebuilds them)."""
    tree = tmp_path / "bpf-next"
    shutil.copytree(SOURCE_DIR, tree, ignore=shutil.ignore_patterns("__pycache__"))
    header = tree / "lib" / "abi.h"
    text = header.read_text()
    version = int(re.search(r"#define WEFT_ABI_VERSION (\d+)", text).group(1)) + 1
    text = re.sub(r"#define WEFT_ABI_VERSION \d+", f"#define WEFT_ABI_VERSION {version}", text)
    for name in changed_maps:
        text = re.sub(rf"#define WEFT_LAYOUT_{name} \d+", f"#define WEFT_LAYOUT_{name} {version}", text)
    header.write_text(text)
    return tree, version


def test_an_abi_upgrade_carries_connections_over_and_rebuilds_changed_maps(lab, tmp_path):
    from agent.datapath.abi import link_dir
    from agent.datapath.cgroup import attached_program_id

    tree, version = next_abi(tmp_path, ["weft_policy", "weft_endpoints"])
    connect4 = {node: link_dir(node) / "sock_connect4" for node in ("node-1", "node-2")}
    old_programs = {node: attached_program_id(pin) for node, pin in connect4.items()}
    with Load() as load:
        subprocess.run([MESHCTL, "lab", "restart-agent"], check=True, capture_output=True, timeout=240,
                       env={**os.environ, "WEFT_BPF_DIR": str(tree)})
    load.assert_nothing_broke()
    status = json.loads(meshctl("status", "-o", "json").stdout)
    for node, agent in status.items():
        pin_dir = Path(agent["pinDir"])
        assert pin_dir.name == f"v{version}", f"{node} pins under the new version"
        assert sorted(p.name for p in pin_dir.parent.iterdir()) == ["links", pin_dir.name], \
            "the old pins are gone; the cgroup links stay"
        assert attached_program_id(connect4[node]) not in (None, old_programs[node]), \
            "the link runs the new agent's program"
        assert agent["ready"] and not agent.get("errors")
