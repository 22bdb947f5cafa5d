"""The lab's record of what it made, so every command (and `down`) knows it.

Everything created is written down before the next step, so a lab that failed
half-way up can still be taken down. Processes are recorded with their start
time: a pid reused by an unrelated process is never signalled.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

LAB_DIR = Path(os.environ.get("WEFT_LAB_DIR", "/run/weft/lab"))


class NoLab(Exception):
    def __init__(self):
        super().__init__("no lab is up: start one with `meshctl lab up`")


def _start_ticks(pid: int) -> int:
    """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat, field 22).
    Not psutil's create_time: that adds the boot time as the wall clock gives it, and when
    the wall clock is stepped (a VM's host resyncs it) every recorded process reads as a
    stranger, which `lab down` then left running."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[19])


@dataclass
class Proc:
    pid: int
    started: int  # clock ticks since boot

    @classmethod
    def of(cls, pid: int) -> "Proc":
        return cls(pid, _start_ticks(pid))

    def alive(self) -> bool:
        try:
            return (_start_ticks(self.pid) == self.started
                    and psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE)
        except (OSError, psutil.NoSuchProcess):
            return False

    def kill(self) -> None:
        """SIGKILL at once, as a crash would, and wait until the process is gone."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. A zombie counts as stopped: its
        parent (not this process, usually) reaps it."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                return
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + timeout
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        if self.alive():
            raise RuntimeError(f"process {self.pid} survived SIGKILL")


@dataclass
class NodeRec:
    name: str
    index: int
    netns: str
    ip: str
    pod_cidr: str
    socket: str
    agent: Proc | None = None
    cgroup: str = ""  # its processes' cgroup, where its agent attaches socket programs; "" without cgroup v2


@dataclass
class PodRec:
    namespace: str
    name: str
    node: str
    ip: str
    netns: str
    host_if: str
    server: Proc | None = None


@dataclass
class LabState:
    nodes: list[NodeRec] = field(default_factory=list)
    pods: dict[str, PodRec] = field(default_factory=dict)       # "ns/name"
    objects: dict[str, dict] = field(default_factory=dict)      # "Kind/ns/name" -> user's object
    netns: list[str] = field(default_factory=list)              # every namespace made, in order
    generation: int = 0
    next_service_ip: int = 10

    @property
    def dir(self) -> Path:
        return LAB_DIR

    @property
    def manifests(self) -> Path:
        return LAB_DIR / "manifests"

    def node(self, name: str) -> NodeRec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r} in the lab (nodes: {', '.join(n.name for n in self.nodes)})")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LabState":
        raw = json.loads(text)
        proc = lambda p: Proc(**p) if p else None  # noqa: E731
        return cls(
            nodes=[NodeRec(**{**n, "agent": proc(n.get("agent"))}) for n in raw["nodes"]],
            pods={k: PodRec(**{**p, "server": proc(p.get("server"))}) for k, p in raw["pods"].items()},
            objects=raw["objects"],
            netns=raw["netns"],
            generation=raw["generation"],
            next_service_ip=raw.get("next_service_ip", 10),
        )


def exists() -> bool:
    return (LAB_DIR / "state.json").exists()


@contextmanager
def locked(create: bool = False):
    """Load the state under an exclusive lock; save it when the block ends (even on error)."""
    if not create and not exists():
        raise NoLab()
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    with open(LAB_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = LAB_DIR / "state.json"
        state = LabState.from_json(path.read_text()) if path.exists() else LabState()
        try:
            yield state
        finally:
            if LAB_DIR.exists():
                tmp = path.with_suffix(".tmp")
                tmp.write_text(state.to_json())
                tmp.replace(path)


def load() -> LabState:
    if not exists():
        raise NoLab()
    return LabState.from_json((LAB_DIR / "state.json").read_text())
