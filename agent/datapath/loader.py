"""Compiles bpf/ with BCC, pins its maps per node and hands out program fds.

BCC raises a bare Exception on a compile failure and writes the compiler's
message to fd 2; the loader captures that output and raises a CompileError
naming the source and cflags, so the agent's log says what went wrong.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bpf import SOURCE_DIR

from . import abi, cgroup
from .errors import CompileError, DatapathError
from .maps import MapInfo, map_info
from .unit import translation_unit

log = logging.getLogger(__name__)

BPF_F_NO_COMMON_LRU = 1 << 1  # uapi/linux/bpf.h: an LRU map with a list per CPU


@dataclass(frozen=True)
class DatapathConfig:
    """Compile-time configuration, passed to the C code as -D flags."""

    node: str
    pin_root: Path = abi.PIN_ROOT
    ct_map_size: int = 65536
    ct_map_per_cpu_lru: bool = False  # lib/conntrack.h: per-CPU LRU lists instead of one shared
    endpoint_map_size: int = 1024
    flow_ring_pages: int = 256  # a power of two
    lb_services: int = 65536
    lb_backends: int = 65536
    lb_slots: int = 262144
    lb_maglev: int = 262144
    lb_affinity: int = 65536
    maglev_table_size: int = 1021  # prime
    snat_map_size: int = 65536
    ipcache_map_size: int = 131072
    policy_map_size: int = 262144
    # lib/host_routing.h: forward pod traffic in BPF (False: the node's stack routes it all)
    host_routing: bool = True
    # addresses pods reach without the node's NAT (None: none but local pods)
    native_routing_cidr: ipaddress.IPv4Network | None = None

    @property
    def pin_dir(self) -> Path:
        return abi.pin_dir(self.node, self.pin_root)

    def cflags(self) -> list[str]:
        if self.flow_ring_pages & (self.flow_ring_pages - 1):
            raise DatapathError(f"flow ring pages must be a power of two, not {self.flow_ring_pages}")
        return [
            f'-DWEFT_PIN_DIR="{self.pin_dir}"',
            f"-DWEFT_CT_MAP_SIZE={self.ct_map_size}",
            f"-DWEFT_CT_MAP_FLAGS={'BPF_F_NO_COMMON_LRU' if self.ct_map_per_cpu_lru else 0}",
            f"-DWEFT_ENDPOINT_MAP_SIZE={self.endpoint_map_size}",
            f"-DWEFT_FLOW_RING_PAGES={self.flow_ring_pages}",
            f"-DWEFT_LB_SERVICE_MAP_SIZE={self.lb_services}",
            f"-DWEFT_LB_BACKEND_MAP_SIZE={self.lb_backends}",
            f"-DWEFT_LB_SLOT_MAP_SIZE={self.lb_slots}",
            f"-DWEFT_LB_MAGLEV_MAP_SIZE={self.lb_maglev}",
            f"-DWEFT_LB_AFFINITY_MAP_SIZE={self.lb_affinity}",
            f"-DWEFT_SNAT_MAP_SIZE={self.snat_map_size}",
            f"-DWEFT_IPCACHE_MAP_SIZE={self.ipcache_map_size}",
            f"-DWEFT_POLICY_MAP_SIZE={self.policy_map_size}",
            f"-DWEFT_HOST_ROUTING={int(self.host_routing)}",
            *self._native_routing_cflags(),
        ]

    def _native_routing_cflags(self) -> list[str]:
        net = self.native_routing_cidr
        if net is None:
            return []
        return [f"-DWEFT_NATIVE_ROUTING_NET={int(net.network_address):#010x}U",
                f"-DWEFT_NATIVE_ROUTING_MASK={int(net.netmask):#010x}U"]


@contextmanager
def _captured_stderr():
    """Redirect fd 2 (where clang writes) into a temporary file for the block."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        output: list[str] = []
        try:
            yield output
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            output.append(sink.read().decode(errors="replace"))


def compile_source(source: Path | list[Path], cflags: list[str]):
    """Compile programs of bpf/ (one file per attach point) into one BPF object."""
    from bcc import BPF

    sources = source if isinstance(source, list) else [source]
    text = translation_unit(sources, [SOURCE_DIR])
    name = "+".join(s.name for s in sources)
    output: list[str] = []
    try:
        with _captured_stderr() as output:
            bpf = BPF(text=text.encode(), cflags=cflags)
    except Exception as exc:  # BCC raises a bare Exception
        text = "".join(output) or str(exc)
        raise CompileError(name, cflags, text) from None
    warnings = "".join(output).strip()
    if warnings:
        log.debug("compiler output for %s:\n%s", name, warnings)
    return bpf


class PodPrograms:
    """The node's datapath compiled and loaded: tc_pod.c (from_pod and to_pod, on
    every pod interface), tc_node.c (from_network, on the uplink) and sock_lb.c
    (on the node's cgroup), sharing their maps and one flow ring buffer."""

    SOURCES = [SOURCE_DIR / "tc_pod.c", SOURCE_DIR / "tc_node.c", SOURCE_DIR / "sock_lb.c"]
    FROM_POD = "from_pod"
    TO_POD = "to_pod"
    FROM_NETWORK = "from_network"
    # socket programs: name -> the cgroup hook it runs at
    SOCKET_HOOKS = {"sock_connect4": cgroup.CGROUP_INET4_CONNECT,
                    "sock_getpeername4": cgroup.CGROUP_INET4_GETPEERNAME}
    # socket-local storage: its entries belong to sockets, and neither BCC 0.26 nor
    # the kernel can list them
    SOCKET_STORAGE = ("weft_sock_lb",)

    def __init__(self, config: DatapathConfig):
        from bcc import BPF

        self.config = config
        self._pinned: dict[str, MapInfo] = {}
        config.pin_dir.mkdir(parents=True, exist_ok=True)
        self.bpf = compile_source(self.SOURCES, config.cflags())
        try:
            self.from_pod = self.bpf.load_func(self.FROM_POD.encode(), BPF.SCHED_CLS)
            self.to_pod = self.bpf.load_func(self.TO_POD.encode(), BPF.SCHED_CLS)
            self.from_network = self.bpf.load_func(self.FROM_NETWORK.encode(), BPF.SCHED_CLS)
            self.socket = {
                name: self.bpf.load_func(name.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=hook)
                for name, hook in self.SOCKET_HOOKS.items()}
        except Exception as exc:
            raise DatapathError(f"the kernel rejected a program: {exc}") from None

    def table(self, name: str):
        return self.bpf[name.encode()]

    def map_fd(self, name: str) -> int:
        """Any map's fd, socket storage included (BCC has no table type for it)."""
        from bcc.libbcc import lib

        fd = lib.bpf_table_fd(self.bpf.module, name.encode())
        if fd < 0:
            raise KeyError(name)
        return fd

    def pinned(self, name: str) -> MapInfo:
        """The map as the kernel made it. A map pinned by an earlier start keeps
        its size and flags whatever this start is configured with, and BCC
        reports the configured ones, not the pin's."""
        if name not in self._pinned:
            self._pinned[name] = map_info(self.map_fd(name))
        return self._pinned[name]

    def capacity(self, name: str) -> int:
        """Entries the map holds in the kernel (see pinned)."""
        return self.pinned(name).max_entries

    def pins_unlike_config(self, names) -> dict[str, list[str]]:
        """Maps among `names` whose pin was created otherwise than this start
        configures them (BCC reuses a pin as it is): name -> what differs."""
        out = {}
        for name in names:
            if name in self.SOCKET_STORAGE:  # sized by the sockets, not by a flag
                continue
            try:
                table = self.table(name)
            except KeyError:  # a pin this build does not define
                continue
            pinned = self.pinned(name)
            differences = []
            if pinned.max_entries != table.max_entries:
                differences.append(f"{pinned.max_entries} entries, not the {table.max_entries} configured")
            pinned_lru = pinned.map_flags & BPF_F_NO_COMMON_LRU
            if pinned_lru != table.flags & BPF_F_NO_COMMON_LRU:
                differences.append(f"{'per-CPU' if pinned_lru else 'common'} LRU lists, not the "
                                   f"{'common' if pinned_lru else 'per-CPU'} configured")
            if differences:
                out[name] = differences
        return out

    def close(self) -> None:
        self.bpf.cleanup()


def unpin_node(node: str, pin_root: Path = abi.PIN_ROOT) -> bool:
    """Remove every pin of a node, all ABI versions. True if anything was removed."""
    root = abi.node_pin_root(node, pin_root)
    if not root.exists():
        return False
    shutil.rmtree(root)
    try:
        pin_root.rmdir()  # only when no other node is left
    except OSError:
        pass
    return True
