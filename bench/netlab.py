"""The peers' network: one identical path per peer, all to one server namespace.

    weft-bench-pK-cli                weft-bench-pK-node                 weft-bench-srv
    eth0 10.250.K.2/32 ── lxcbench ─ (rules or Weft here) ─ srv ─── pK  local 10.240.0.0/16
                                                    10.251.K.1  10.251.K.2

The client is wired as a lab pod is (a /32 behind 169.254.1.1, the node routes
the /32 to its host-side veth), so Weft's agent finds it as an endpoint. The
server answers every backend IP (an AnyIP route: `local 10.240.0.0/16 dev lo`),
so 60,000 endpoints need no 60,000 addresses. Each peer has its own client and
node namespaces: one peer's iptables chains never sit in another's path, and
P0 and Weft run with no netfilter rule loaded at all.

Each peer's client processes run in a cgroup of their own (weft-bench/pK under
the cgroup v2 root), as a node's pods do: Weft's socket programs are attached
to P3's, and serve no other peer's connections.
"""
from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from agent.datapath.cgroup import cgroup2_mount
from cli.lab.topology import add_netns, del_netns, in_cgroup, ip, remove_cgroup, sysctl, wire_pod

PEERS = {"P0": "direct", "P1": "iptables", "P2": "nftables", "P3": "weft"}
SERVER_NS = "weft-bench-srv"
BACKEND_NET = ipaddress.IPv4Network("10.240.0.0/16")
HOST_IF, UPLINK = "lxcbench", "srv"
CGROUP = "weft-bench"


def index(peer: str) -> int:
    return int(peer[1:])


def client_ns(peer: str) -> str:
    return f"weft-bench-{peer.lower()}-cli"


def node_ns(peer: str) -> str:
    return f"weft-bench-{peer.lower()}-node"


def client_ip(peer: str) -> str:
    return f"10.250.{index(peer)}.2"


def client_cgroup(peer: str) -> Path | None:
    """The cgroup of a peer's client processes; None without cgroup v2."""
    root = cgroup2_mount()
    return root / CGROUP / peer.lower() if root else None


def _cgroup_of(ns: str) -> str:
    for peer in PEERS:
        if ns == client_ns(peer):
            return str(client_cgroup(peer) or "")
    return ""


def _command(ns: str, cmd: tuple[str, ...]) -> list[str]:
    """`cmd` in namespace `ns` (and, in a client namespace, in its peer's cgroup)."""
    return in_cgroup(_cgroup_of(ns), ["ip", "netns", "exec", ns, *cmd])


def popen_in_ns(ns: str, *cmd: str, **kwargs) -> subprocess.Popen:
    """`cmd` started in namespace `ns` (and, in a client namespace, in its peer's cgroup)."""
    return subprocess.Popen(_command(ns, cmd), **kwargs)


def in_ns(ns: str, *cmd: str, stdin: str | None = None, timeout: float | None = None) -> str:
    """`cmd` run in namespace `ns`: its output, or a RuntimeError with its stderr."""
    result = subprocess.run(_command(ns, cmd), input=stdin, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} in {ns} failed: {result.stderr.strip()[:500]}")
    return result.stdout


def namespaces() -> list[str]:
    return [SERVER_NS] + [ns for p in PEERS for ns in (client_ns(p), node_ns(p))]


def build() -> None:
    teardown()
    add_netns(SERVER_NS)
    sysctl(SERVER_NS, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
           "net.core.somaxconn=8192", "net.ipv4.tcp_max_syn_backlog=8192")
    ip("route", "add", "local", str(BACKEND_NET), "dev", "lo", netns=SERVER_NS)
    for peer in PEERS:
        _build_path(peer)
        if client_cgroup(peer):
            client_cgroup(peer).mkdir(parents=True, exist_ok=True)


def _build_path(peer: str) -> None:
    k, cli, node = index(peer), client_ns(peer), node_ns(peer)
    add_netns(cli)
    add_netns(node)
    sysctl(node, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
           "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.all.send_redirects=0")
    # many short connections from one client: the whole port range, ports reused quickly
    sysctl(cli, "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1")
    wire_pod(cli, node, HOST_IF, client_ip(peer))  # client <-> node, as a lab pod is wired
    # node <-> server
    peer_if = f"p{k}"
    ip("link", "add", "name", UPLINK, "type", "veth", "peer", "name", peer_if, "netns", SERVER_NS, netns=node)
    ip("addr", "add", f"10.251.{k}.1/24", "dev", UPLINK, netns=node)
    ip("link", "set", "dev", UPLINK, "up", netns=node)
    ip("addr", "add", f"10.251.{k}.2/24", "dev", peer_if, netns=SERVER_NS)
    ip("link", "set", "dev", peer_if, "up", netns=SERVER_NS)
    ip("route", "add", str(BACKEND_NET), "via", f"10.251.{k}.2", netns=node)
    ip("route", "add", f"{client_ip(peer)}/32", "via", f"10.251.{k}.1", netns=SERVER_NS)


def teardown() -> None:
    for ns in namespaces():
        del_netns(ns)
    for peer in PEERS:
        remove_cgroup(str(client_cgroup(peer) or ""))
