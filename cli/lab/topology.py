"""The lab's network: a switch, nodes, pods and an external client, all in
network namespaces. Nothing here touches the root namespace's routes.

    weft-ext (172.18.0.200) ─┐
    weft-node-1 eth0 ─────── weft-sw br0 ─────── weft-node-2 eth0
      (172.18.0.11)                               (172.18.0.12)
      lxc… ── pod eth0 (10.244.1.x/32)            lxc… ── pod eth0 (10.244.2.x/32)

Pods route everything through 169.254.1.1, a gateway address whose neighbour
entry is the host-side veth's MAC (as Cilium wires pods); each node routes
pod /32s to their host veths and other nodes' pod CIDRs to those nodes.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
from pathlib import Path

from agent.datapath.cgroup import cgroup2_mount

NODE_NET = ipaddress.IPv4Network("172.18.0.0/24")
POD_NET = ipaddress.IPv4Network("10.244.0.0/16")  # every node's pod CIDR, routed with no NAT
EXTERNAL_IP = "172.18.0.200"
GATEWAY = "169.254.1.1"
SWITCH_NS = "weft-sw"
EXTERNAL_NS = "weft-ext"
LAB_CGROUP = "weft-lab"  # under the cgroup v2 root: one cgroup per node, for its socket programs
MAX_NODES = 200


class TopologyError(Exception):
    pass


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise TopologyError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
    return result


def sysctl(netns: str, *settings: str) -> None:
    result = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", *settings],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise TopologyError(f"sysctl in {netns} failed: {result.stderr.strip()}")


def node_ip(index: int) -> str:
    return str(NODE_NET.network_address + 10 + index)


def pod_cidr(index: int) -> str:
    return str(ipaddress.IPv4Network((int(POD_NET.network_address) + (index << 8), 24)))


def node_netns(name: str) -> str:
    return f"weft-{name}"


def pod_netns(namespace: str, name: str) -> str:
    return f"weft-pod-{namespace}-{name}"


def host_ifname(namespace: str, name: str) -> str:
    """lxc + 11 hex digits of the pod's key: unique, stable, within IFNAMSIZ."""
    return "lxc" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:11]


def add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "dev", "lo", "up", netns=name)


def del_netns(name: str) -> None:
    ip("netns", "del", name, check=False)


def create_switch() -> None:
    add_netns(SWITCH_NS)
    ip("link", "add", "name", "br0", "type", "bridge", netns=SWITCH_NS)
    ip("link", "set", "dev", "br0", "up", netns=SWITCH_NS)


def _plug(ns: str, port: str, address: str) -> None:
    """Connect namespace `ns` to the switch as eth0 with `address`."""
    ip("link", "add", "name", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
       netns=SWITCH_NS)
    ip("link", "set", "dev", port, "master", "br0", "up", netns=SWITCH_NS)
    ip("addr", "add", f"{address}/{NODE_NET.prefixlen}", "dev", "eth0", netns=ns)
    ip("link", "set", "dev", "eth0", "up", netns=ns)


def create_node(name: str, index: int) -> None:
    ns = node_netns(name)
    add_netns(ns)
    # a node forwards answers of NodePort backends back out of the uplink they
    # came in on: that is routing, not a misconfiguration to redirect hosts about
    sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
           "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.all.send_redirects=0",
           "net.ipv4.conf.default.send_redirects=0")
    _plug(ns, f"sw-{name}"[:15], node_ip(index))


def create_node_cgroup(name: str) -> str:
    """A cgroup for the node's processes (its pods' servers, `lab exec`), so its
    agent's socket programs serve them and no other node's: one kernel runs
    every lab node, as one kernel runs a node's pods. "" without cgroup v2."""
    root = cgroup2_mount()
    if root is None:
        return ""
    path = root / LAB_CGROUP / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def remove_cgroup(path: str) -> None:
    """Remove a cgroup made for the lab or the bench, and its parent once empty (a process
    still in it keeps it)."""
    if not path:
        return
    for directory in (Path(path), Path(path).parent):
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # busy, or the parent still holds another node's
            return


def join_cgroup(path: str) -> None:
    """Move the calling process into cgroup `path` ("" does nothing): before exec, for a pod's process."""
    if path:
        (Path(path) / "cgroup.procs").write_text(str(os.getpid()))


def in_cgroup(path: str, cmd: list[str]) -> list[str]:
    """`cmd` run in cgroup `path` ("": as it is), moved there by a shell before it starts, and
    before an `ip netns exec` in `cmd` hides the cgroup tree. Not by a preexec_fn: that makes
    Python fork() where it would vfork(), and fork() runs the atfork handlers of gRPC, which
    a process that talked to an agent has loaded; they deadlocked a bench run."""
    if not path:
        return cmd
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', path, *cmd]


def route_between_nodes(nodes: list[tuple[str, int]]) -> None:
    for name, index in nodes:
        for _, other in nodes:
            if other != index:
                ip("route", "replace", pod_cidr(other), "via", node_ip(other), netns=node_netns(name))


def create_external() -> None:
    add_netns(EXTERNAL_NS)
    _plug(EXTERNAL_NS, "sw-ext", EXTERNAL_IP)


def create_pod(node: str, namespace: str, name: str, address: str) -> tuple[str, str]:
    """Make the pod's namespace and wire it to its node; return (netns, host ifname)."""
    ns, host_if = pod_netns(namespace, name), host_ifname(namespace, name)
    add_netns(ns)
    wire_pod(ns, node_netns(node), host_if, address)
    return ns, host_if


def wire_pod(ns: str, node_ns: str, host_if: str, address: str) -> None:
    """A veth from namespace `ns` (eth0, `address`/32 behind GATEWAY) to `host_if` in `node_ns`."""
    ip("link", "add", "name", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns,
       netns=node_ns)
    ip("link", "set", "dev", host_if, "up", netns=node_ns)
    mac = json.loads(ip("-j", "link", "show", "dev", host_if, netns=node_ns).stdout)[0]["address"]
    ip("addr", "add", f"{address}/32", "dev", "eth0", netns=ns)
    ip("link", "set", "dev", "eth0", "up", netns=ns)
    ip("neigh", "replace", GATEWAY, "lladdr", mac, "dev", "eth0", "nud", "permanent", netns=ns)
    ip("route", "add", GATEWAY, "dev", "eth0", "scope", "link", netns=ns)
    ip("route", "add", "default", "via", GATEWAY, "dev", "eth0", netns=ns)
    ip("route", "replace", f"{address}/32", "dev", host_if, "scope", "link", netns=node_ns)
