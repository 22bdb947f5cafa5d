"""Agents SIGKILLed and started again while traffic flows through a ClusterIP
under a NetworkPolicy: the datapath is pinned and attached, so nothing the
operator can see changes. No new connection fails, no established one is reset,
the policy keeps the bystander out throughout, and flows resume.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .lab import MANIFESTS, down_if_up, flows, meshctl, pods, up_or_skip

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


def test_sigkilled_agents_break_no_connection_and_keep_the_policy(lab):
    ip = vip()
    assert pods()["r/client"]["spec"]["nodeName"] == "node-1"
    client = traffic("client", ip, "80", "--duration", str(DURATION), "--interval", "0.02", "--keepalive", "4")
    # the bystander's SYNs are dropped, so each attempt waits out its timeout
    bystander = traffic("bystander", ip, "80", "--duration", str(DURATION), "--interval", "0.05",
                        "--timeout", "0.3")
    try:
        time.sleep(3)
        killed_at = time.time()
        meshctl("lab", "restart-agent", "--kill", "--down-for", "3")
        restarted_at = time.time()
        meshctl("lab", "restart-agent", "node-2", "--kill")
    finally:
        seen, kept_out = result(client), result(bystander)["new"]

    assert restarted_at - killed_at > 3, "both agents were down while traffic flowed"
    new, kept = seen["new"], seen["keepalive"]
    assert new["attempts"] > 300 and new["failures"] == [], f"new connections failed: {new['failures'][:5]}"
    assert kept["attempts"] > 400 and kept["failures"] == [], f"an open connection broke: {kept['failures'][:5]}"
    assert kept_out["attempts"] > 20 and kept_out["ok"] == 0, "the bystander got through during the restart"

    after = [f for f in flows("--from-pod", "r/client", "--since", f"{int(time.time() - restarted_at) + 1}s",
                              "--last", "1000")
             if "flow" in f]
    assert after, "flows resume once the agents are back"
    stopped = [f for f in flows("--from-pod", "r/bystander", "--verdict", "dropped", "--last", "1000")
               if "flow" in f]
    assert stopped, "the bystander's drops are reported"
