"""The four ways a client reaches a Service's endpoint, each in its own namespaces.

Every peer programs the same catalog (kubeproxy.py) into its node namespace:
`sync` from scratch, `add` one Service, `clear` all. Each call returns when the
command that programs it returned; whether the datapath has the change is
measured from the client side (bench/traffic.py's probe), never assumed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import kubeproxy, netlab
from .netlab import in_ns
from .kubeproxy import Service

NODE_NAME = "bench-node"
PIN_ROOT = "/sys/fs/bpf/weft-bench"


class Direct:
    """P0: no Service; the client connects straight to the first endpoint."""
    peer = "P0"

    def target(self, s: Service) -> tuple[str, int]:
        return s.endpoints[0], s.target_port

    def prepare(self, services: list[Service]) -> None:
        """Before a timed sync: what stands in for the API server's side of it."""

    def sync(self, services: list[Service]) -> None:
        pass

    def add(self, services: list[Service], added: Service) -> None:
        pass

    def remove(self, services: list[Service], added: Service) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


class IPTables(Direct):
    """P1: kube-proxy's iptables mode."""
    peer = "P1"

    def target(self, s: Service) -> tuple[str, int]:
        return s.vip, s.port

    def sync(self, services: list[Service]) -> None:
        in_ns(netlab.node_ns(self.peer), "iptables-restore", stdin=kubeproxy.iptables_full(services))

    def add(self, services: list[Service], added: Service) -> None:
        in_ns(netlab.node_ns(self.peer), "iptables-restore", "--noflush",
              stdin=kubeproxy.iptables_change(services, added))

    def remove(self, services: list[Service], added: Service) -> None:
        in_ns(netlab.node_ns(self.peer), "iptables-restore", "--noflush",
              stdin=kubeproxy.iptables_removal(services, added))

    def clear(self) -> None:
        in_ns(netlab.node_ns(self.peer), "iptables-restore", stdin="*nat\nCOMMIT\n")


class NFTables(IPTables):
    """P2: kube-proxy's nftables mode."""
    peer = "P2"

    def sync(self, services: list[Service]) -> None:
        in_ns(netlab.node_ns(self.peer), "nft", "-f", "-", stdin=kubeproxy.nft_full(services))

    def add(self, services: list[Service], added: Service) -> None:
        in_ns(netlab.node_ns(self.peer), "nft", "-f", "-", stdin=kubeproxy.nft_change(added))

    def remove(self, services: list[Service], added: Service) -> None:
        in_ns(netlab.node_ns(self.peer), "nft", "-f", "-", stdin=kubeproxy.nft_removal(added))

    def clear(self) -> None:
        subprocess.run(["ip", "netns", "exec", netlab.node_ns(self.peer), "nft", "delete", "table", "ip",
                        "kube-proxy"], capture_output=True)


class Weft(IPTables):
    """P3: Weft's agent in the node namespace, reading a manifests directory.

    The agent runs with its default options: inotify wakes it at a change in the
    directory, as a watch event from the Kubernetes API does. Its socket programs
    serve the client's cgroup, as the DaemonSet attaches them to a node's. Manifests are JSON,
    as the API server's objects are: the agent parses what it would be sent."""
    peer = "P3"

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="weft-bench-"))
        self.manifests = self.dir / "manifests"
        self.manifests.mkdir()
        self.socket = f"unix://{self.dir}/agent.sock"
        self._write("00-client.json", self._render([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": kubeproxy.NAMESPACE}},
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "client", "namespace": kubeproxy.NAMESPACE, "labels": {"app": "client"}},
             "spec": {"nodeName": NODE_NAME, "containers": [{"name": "main"}]},
             "status": {"podIP": netlab.client_ip(self.peer), "phase": "Running"}}]))
        self.generation = 0
        self._prepared: tuple[int, str] | None = None
        log = open(self.dir / "agent.log", "ab")
        self.proc = subprocess.Popen(
            # nsenter, not `ip netns exec`: that remounts /sys, and the agent's pins
            # would land in a bpffs no other process sees
            ["nsenter", f"--net=/var/run/netns/{netlab.node_ns(self.peer)}", "--", sys.executable, "-m", "agent.main",
             "--node-name", NODE_NAME, "--manifests", str(self.manifests), "--listen", self.socket,
             "--uplink", netlab.UPLINK, "--pin-root", PIN_ROOT, "--metrics-address", "",
             "--identity-file", str(self.dir / "identities.json"),
             "--cleanup-on-exit",
             # the backends stand for pods of another node, reached unNATed: host routing's domain
             "--ipv4-native-routing-cidr", str(netlab.BACKEND_NET),
             *self._socket_lb_args(),
             # more flags for the agent under test, say another --ct-map-size to compare
             *os.environ.get("WEFT_BENCH_AGENT_ARGS", "").split()],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.wait_synced(120)

    @staticmethod
    def _socket_lb_args() -> list[str]:
        """Socket-level load balancing for the client's cgroup, as a node runs it;
        WEFT_BENCH_SOCKET_LB=0 measures the per-packet path alone."""
        cgroup = netlab.client_cgroup("P3")
        if cgroup is None or os.environ.get("WEFT_BENCH_SOCKET_LB", "1") == "0":
            return []
        return ["--socket-lb-cgroup", str(cgroup)]

    @staticmethod
    def _render(objects: list[dict]) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})

    def _write(self, name: str, text: str) -> None:
        tmp = self.manifests / f".{name}.tmp"
        tmp.write_text(text)
        os.rename(tmp, self.manifests / name)

    def _bump(self) -> None:
        self.generation += 1
        (self.manifests / ".generation").write_text(str(self.generation))

    def wait_synced(self, timeout: float) -> None:
        """Until the agent reports this generation programmed (used between timed runs only)."""
        from cli.agents import status

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Weft's agent exited; its log: {self.dir / 'agent.log'}")
            try:
                st = status(self.socket, timeout=1)
                if st.ready and st.synced_generation >= self.generation:
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Weft's agent did not sync in {timeout:.0f} s; its log: {self.dir / 'agent.log'}")

    def prepare(self, services: list[Service]) -> None:
        """The objects serialized ahead: an API server holds them already, and
        turning 20,000 of them into JSON here is not the agent's time."""
        self._prepared = (id(services), self._render(kubeproxy.weft_objects(services)))

    def sync(self, services: list[Service]) -> None:
        prepared, self._prepared = self._prepared, None
        text = prepared[1] if prepared and prepared[0] == id(services) else \
            self._render(kubeproxy.weft_objects(services))
        self._write("10-services.json", text)

    def add(self, services: list[Service], added: Service) -> None:
        self._write(f"20-{added.name}.json", self._render(kubeproxy.weft_objects([added])))

    def remove(self, services: list[Service], added: Service) -> None:
        (self.manifests / f"20-{added.name}.json").unlink()
        self._bump()
        self.wait_synced(60)

    def clear(self) -> None:
        for path in self.manifests.glob("[12]0-*.json"):
            path.unlink()
        self._bump()
        self.wait_synced(120)

    def socket_translations(self) -> int | None:
        """Connections the agent's socket programs gave a backend at connect(), so
        far: the bench says whether P3's traffic took that path (None: unreadable)."""
        from agent.datapath import abi

        pin = abi.pin_dir(NODE_NAME, Path(PIN_ROOT)) / "weft_sock_lb_translations"
        result = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", str(pin)], capture_output=True, text=True)
        try:
            return sum(v["value"] for entry in json.loads(result.stdout) for v in entry["formatted"]["values"])
        except (ValueError, KeyError, TypeError):
            return None

    def close(self) -> None:
        crashed = self.proc.poll() is not None
        if not crashed:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not crashed and self.proc.returncode == 0:  # else its log stays, for the error that named it
            shutil.rmtree(self.dir, ignore_errors=True)


def all_peers() -> list:
    return [Direct(), IPTables(), NFTables(), Weft()]
