"""The agent with the Kubernetes API as its source (--kubeconfig), against a server
speaking the list/watch protocol: it programs Services from the API, follows
changes, and keeps the pinned datapath when the API goes away, even across a
restart while the API is unreachable.

The agent runs in the root network namespace here (the test API server listens
on its loopback); it has no pods and no uplink, so it attaches nothing and
routes nothing, and its pins live under a test-only root.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.kubeapi import FakeAPI

from .lab import meshctl

pytestmark = pytest.mark.kernel
PIN_ROOT = "/sys/fs/bpf/weft-k8s-test"
NODE = "kube-1"


def service(name: str, ip: str, port: int = 80) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "k"},
            "spec": {"clusterIP": ip, "selector": {"app": name},
                     "ports": [{"name": "http", "port": port, "targetPort": 8080}]}}


def backend(name: str, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "k", "labels": {"app": "web"}},
            "spec": {"nodeName": "kube-2", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}


class Agent:
    def __init__(self, tmp: Path, kubeconfig: Path):
        self.tmp, self.kubeconfig = tmp, kubeconfig
        self.socket = f"unix://{tmp}/agent.sock"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.metrics = f"127.0.0.1:{s.getsockname()[1]}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.tmp / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.main", "--node-name", NODE, "--kubeconfig", str(self.kubeconfig),
             "--listen", self.socket, "--pin-root", PIN_ROOT, "--identity-file", str(self.tmp / "ids.json"),
             "--metrics-address", self.metrics, "--identity-gc-grace-period", "2"], stdout=log, stderr=log, start_new_session=True)

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)

    def status(self) -> dict:
        out = meshctl("status", "--server", self.socket, "-o", "json", check=False).stdout
        return json.loads(out or "{}").get(self.socket, {})

    def frontends(self) -> list[str]:
        out = meshctl("services", "--server", self.socket, "-o", "json", check=False).stdout
        return [f"{f['ip']}:{f['port']}" for f in json.loads(out or "{}").get(self.socket, [])]

    def healthz(self) -> int:
        try:
            return urllib.request.urlopen(f"http://{self.metrics}/healthz", timeout=2).status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def pinned_services(self) -> str:
        return meshctl("bpf", "weft_lb4_services", "--server", self.socket, check=False).stdout


def wait(predicate, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path):
    api = FakeAPI(bookmark_every=1.0)
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "k"}})
    api.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
             "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.10"}]}})
    api.put(backend("web-1", "10.250.0.11"))
    api.put(service("web", "10.96.200.1"))
    config = tmp_path / "kubeconfig"
    api.kubeconfig(config)
    agent = Agent(tmp_path, config)
    yield api, agent
    agent.stop()
    api.close()
    subprocess.run(["rm", "-rf", PIN_ROOT], check=False)


def test_services_come_from_the_api_and_follow_its_changes(cluster):
    api, agent = cluster
    agent.start()
    wait(lambda: agent.status().get("ready"), what="the agent to be ready")
    assert agent.healthz() == 200, "ready for the DaemonSet's probe"
    assert "10.96.200.1:80" in wait(agent.frontends, what="the Service from the API")
    api.put(service("api", "10.96.200.2", 8080))
    wait(lambda: "10.96.200.2:8080" in agent.frontends(), 10, "a Service added through a watch")
    api.delete("Service", "web", "k")
    wait(lambda: "10.96.200.1:80" not in agent.frontends(), 10, "a Service deleted through a watch")


def test_a_service_without_selector_gets_the_backends_of_its_endpoint_slices(cluster):
    api, agent = cluster
    agent.start()
    wait(lambda: agent.status().get("ready"), what="the agent to be ready")
    api.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "k"},
             "spec": {"clusterIP": "10.96.200.5", "ports": [{"name": "pg", "port": 5432}]}})
    api.put({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
             "metadata": {"name": "db-1", "namespace": "k", "labels": {"kubernetes.io/service-name": "db"}},
             "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
             "endpoints": [{"addresses": ["192.0.2.50"], "conditions": {"ready": True}}]})

    def backends() -> list[str]:
        out = json.loads(meshctl("services", "--server", agent.socket, "-o", "json").stdout)
        return [f"{b['ip']}:{b['port']}" for f in out.get(agent.socket, []) if f["ip"] == "10.96.200.5"
                for b in f.get("backends", [])]
    assert wait(backends, 10, "the slice's endpoint as a backend") == ["192.0.2.50:5432"]
    assert "vip=10.96.200.5" in agent.pinned_services(), "programmed into the datapath"


def identities(api) -> dict[str, list[str]]:
    return {name: obj["spec"]["labels"] for (_, name), obj in api.objects["/apis/weft.dev/v1/weftidentities"].items()}


def test_identities_are_weftidentity_objects_and_unused_ones_are_collected(cluster):
    api, agent = cluster
    agent.start()
    found = wait(lambda: {n: l for n, l in identities(api).items() if "k8s:app=web" in l}, what="an identity")
    (number,) = found
    assert int(number) >= 256 and "k8s:io.kubernetes.pod.namespace=k" in found[number]
    shown = json.loads(meshctl("identities", "--server", agent.socket, "-o", "json").stdout)
    workloads = {str(i["id"]): i["labels"] for i in shown[agent.socket]["identities"] if i["kind"] == "workload"}
    assert workloads == found, "the agent uses the numbers in the API"
    api.delete("Pod", "web-1", "k")
    wait(lambda: number not in identities(api), 20, "the unused identity to be collected")


def test_the_pinned_datapath_outlives_the_api_and_a_restart_without_it(cluster):
    api, agent = cluster
    agent.start()
    wait(lambda: "10.96.200.1:80" in agent.frontends(), what="the Service from the API")
    api.close()  # the API server goes away
    problems = wait(lambda: [e for e in agent.status().get("errors", []) if "Kubernetes API" in e], 30,
                    "the agent to report the API unreachable")
    assert problems and "10.96.200.1:80" in agent.frontends(), "reconnecting flushes nothing"
    agent.stop(signal.SIGKILL)
    agent.start()  # and starts again while the API is still unreachable
    wait(lambda: "vip=10.96.200.1" in agent.pinned_services(), 60, "the restarted agent to load its programs")
    time.sleep(2)
    status = agent.status()
    assert not status.get("ready"), "nothing is programmed before every kind is listed"
    assert agent.healthz() == 503, "not ready for the DaemonSet's probe"
    assert "vip=10.96.200.1" in agent.pinned_services(), "the pinned Service is still in force"
