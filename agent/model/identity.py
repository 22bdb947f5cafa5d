"""Security identities: one number per distinct set of security-relevant labels.

A pod's identity labels are its namespace, its namespace's labels and its own
labels minus noise that differs between replicas (pod-template-hash, ...), so
every replica of a Deployment shares one identity and policy entries are per
identity, not per pod. Numbers below 256 are reserved (DESIGN.md).

Allocation goes through an `IdentityAllocator`. The manifests source uses
`FileAllocator`: a JSON file under an exclusive lock, so several agents on one
machine (the lab's nodes) agree on every number and a restart keeps them. A
cluster-wide allocator (a custom resource per identity, through the API)
implements the same two methods.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

IDENTITY_ANY = 0  # in policy keys: any peer
IDENTITY_HOST = 1
IDENTITY_WORLD = 2
IDENTITY_UNMANAGED = 3
IDENTITY_HEALTH = 4
IDENTITY_INIT = 5
IDENTITY_REMOTE_NODE = 6
IDENTITY_KUBE_APISERVER = 7
FIRST_WORKLOAD_IDENTITY = 256
# Node-local identities of ipBlock prefixes, as Cilium's local CIDR identities:
# never shared between nodes, so they need no agreement.
FIRST_CIDR_IDENTITY = 1 << 24

RESERVED = {
    IDENTITY_HOST: "host", IDENTITY_WORLD: "world", IDENTITY_UNMANAGED: "unmanaged",
    IDENTITY_HEALTH: "health", IDENTITY_INIT: "init", IDENTITY_REMOTE_NODE: "remote-node",
    IDENTITY_KUBE_APISERVER: "kube-apiserver",
}

# Labels that differ between replicas of one workload and say nothing about security.
NOISE_LABELS = frozenset({
    "pod-template-hash", "controller-revision-hash", "pod-template-generation",
    "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid", "controller-uid",
    "batch.kubernetes.io/job-name", "job-name",
})

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."


@dataclass(frozen=True)
class IdentityLabels:
    """What an identity stands for; hashable, so it keys the allocation."""

    namespace: str
    pod_labels: tuple[tuple[str, str], ...]
    namespace_labels: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, namespace: str, pod_labels: Iterable[tuple[str, str]],
           namespace_labels: dict[str, str]) -> "IdentityLabels":
        return cls(namespace, tuple(sorted((k, v) for k, v in pod_labels if k not in NOISE_LABELS)),
                   tuple(sorted(namespace_labels.items())))

    def as_strings(self) -> list[str]:
        """Cilium's spelling, as flow records and `meshctl identities` show them."""
        out = [f"k8s:{NAMESPACE_LABEL}={self.namespace}"]
        out += [f"k8s:{NAMESPACE_LABELS_PREFIX}{k}={v}" for k, v in self.namespace_labels]
        out += [f"k8s:{k}={v}" for k, v in self.pod_labels]
        return sorted(out)

    def key(self) -> str:
        return ";".join(self.as_strings())


class IdentityAllocator(Protocol):
    def allocate(self, wanted: list[IdentityLabels]) -> dict[IdentityLabels, int]:
        """A number for each label set, the same on every node, new ones created."""

    def known(self) -> dict[str, int]:
        """Every allocated identity: label key -> number."""


class FileAllocator:
    """Identities in a JSON file shared by the agents of one machine."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.cache: dict[IdentityLabels, int] = {}

    def allocate(self, wanted: list[IdentityLabels]) -> dict[IdentityLabels, int]:
        missing = [w for w in wanted if w not in self.cache]
        if missing:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                table = self._read()
                changed = False
                for labels in missing:
                    key = labels.key()
                    if key not in table:
                        table[key] = max(table.values(), default=FIRST_WORKLOAD_IDENTITY - 1) + 1
                        changed = True
                    self.cache[labels] = table[key]
                if changed:
                    tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
                    tmp.write_text(json.dumps(table, indent=0, sort_keys=True))
                    tmp.replace(self.path)
        return {w: self.cache[w] for w in wanted}

    def known(self) -> dict[str, int]:
        return self._read()

    def _read(self) -> dict[str, int]:
        try:
            table = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(f"identity file {self.path} is corrupt: {exc}") from None
        return {k: int(v) for k, v in table.items()}


class MemoryAllocator:
    """Identities of one process only: tests and benchmarks."""

    def __init__(self):
        self.table: dict[str, int] = {}

    def allocate(self, wanted: list[IdentityLabels]) -> dict[IdentityLabels, int]:
        out = {}
        for labels in wanted:
            key = labels.key()
            if key not in self.table:
                self.table[key] = FIRST_WORKLOAD_IDENTITY + len(self.table)
            out[labels] = self.table[key]
        return out

    def known(self) -> dict[str, int]:
        return dict(self.table)
