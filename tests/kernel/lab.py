"""Running meshctl as a user would, and reading what it says."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

MESHCTL = str(Path(sys.executable).parent / "meshctl")
MANIFESTS = Path(__file__).resolve().parent / "manifests"


def meshctl(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    result = subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"meshctl {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def probe(src: str, target: str, port: int, protocol: str = "tcp", path: str = "/hostname") -> dict:
    out = meshctl("lab", "probe", src, target, str(port), "--protocol", protocol, "--path", path,
                  "-o", "json", check=False)
    result = json.loads(out.stdout)
    assert out.returncode == (0 if result["result"] == "connected" else 1)
    return result


def vip(service: str) -> str:
    """The ClusterIP the lab gave a Service (by name)."""
    services = json.loads(meshctl("lab", "get", "services", "-o", "json").stdout)["items"]
    return next(s["spec"]["clusterIP"] for s in services if s["metadata"]["name"] == service)


def pods() -> dict[str, dict]:
    items = json.loads(meshctl("lab", "get", "pods", "-o", "json").stdout)["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in items}


def flows(*args: str) -> list[dict]:
    out = meshctl("flows", "-o", "json", *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def wait_for_flows(predicate, *args: str, timeout: float = 5.0) -> list[dict]:
    """Flows matching predicate, polling until the agents have drained them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [f for f in flows(*args) if "flow" in f and predicate(f["flow"])]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def up_or_skip(nodes: int, manifest: Path):
    """Build a lab for a test module; skip when the machine's lab slot is taken."""
    import pytest

    from cli.lab import state as lab_state

    if lab_state.exists():
        pytest.skip("a lab is already up on this machine; these tests build their own "
                    "(run `meshctl lab down` first)")
    meshctl("lab", "up", "--nodes", str(nodes), "-f", str(manifest))


def down_if_up() -> None:
    from cli.lab import state as lab_state

    if lab_state.exists():
        meshctl("lab", "down")


def apply_text(tmp_path, text: str, verb: str = "apply") -> None:
    """`meshctl lab apply` (or delete) of manifests given as text."""
    path = tmp_path / f"{verb}-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    meshctl("lab", verb, "-f", str(path))


class KeepAlive:
    """One HTTP/1.1 connection from a pod's network namespace, kept open across requests."""

    def __init__(self, pod_netns: str, ip: str, port: int, timeout: float = 2):
        from cli.lab import netns

        with netns.entered(pod_netns):
            self.sock = socket.create_connection((ip, port), timeout=timeout)

    def get(self, path: str = "/hostname") -> str:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += self.sock.recv(4096)
        return body.decode()

    def close(self) -> None:
        self.sock.close()


def scrape(node_netns: str) -> dict[str, float]:
    """The node agent's /metrics, from inside its network namespace (loopback)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from cli.lab import netns

    with netns.entered(node_netns):
        text = urllib.request.urlopen("http://127.0.0.1:9962/metrics", timeout=2).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out
