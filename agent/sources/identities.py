"""Cluster-wide security identities: one cluster-scoped WeftIdentity object per number.

Every node must give a set of labels the same number, or flows and policy
dumps would disagree between nodes. The API server is the arbiter: an identity
is an object named by its number (`daemonset/05-crd.yaml`), so two nodes
creating the same number conflict (409) and the loser reads what won. If it
holds the same labels, both use it; if not, the loser tries the next number.

Two nodes may still create different numbers for the same labels at the same
moment (neither saw the other's). Every node then uses the lowest number
holding those labels, once its watch has seen both: the choice depends only on
the API's contents, so all nodes converge on it, and the higher duplicate is
garbage: no node uses it, so it is collected like any other unused identity.

An identity no pod in the cluster uses, as this node sees the cluster, is
deleted after a grace period (both since it was created and since this node
last saw it used), so a node that has not yet seen a new pod does not delete
the identity just created for it. Every node collects; a delete that finds the
object gone is fine.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time

from ..model.identity import FIRST_WORKLOAD_IDENTITY, IdentityLabels
from .events import EventType
from .kubernetes import Informer
from .objects import ObjectKey

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "weft.dev", "v1", "weftidentities", "WeftIdentity"
CREATE_ATTEMPTS = 32
GC_GRACE_S = 300.0
GC_INTERVAL_S = 60.0


def labels_key(obj: dict) -> str:
    """The key of an identity object's labels, as IdentityLabels.key() spells it."""
    return ";".join(sorted((obj.get("spec") or {}).get("labels") or []))


class IdentityInformer(Informer):
    """List and watch WeftIdentity objects, with the same resume and relist logic."""

    def _key(self, obj: dict):
        name = (obj.get("metadata") or {}).get("name", "")
        if not name.isdigit() or int(name) < FIRST_WORKLOAD_IDENTITY:
            log.warning("ignoring WeftIdentity %r: its name is not a workload identity number", name)
            return None
        return ObjectKey(KIND, "", name), obj


class ClusterAllocator:
    """The IdentityAllocator of the Kubernetes source: numbers agreed through the API."""

    def __init__(self, client, stopping: threading.Event | None = None, gc_grace: float = GC_GRACE_S):
        from kubernetes import client as k8s

        self.api = k8s.CustomObjectsApi(client)
        self.gc_grace = gc_grace
        self.events: queue.Queue = queue.Queue()
        self.informer = IdentityInformer(
            KIND, functools.partial(self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL),
            self.events, stopping or threading.Event())
        self.by_number: dict[int, str] = {}     # every identity the API holds: number -> labels key
        self.created: dict[int, float] = {}     # number -> when this node first saw it (monotonic)
        self.last_used: dict[int, float] = {}   # number -> when this node last used it
        self.assigned: dict[str, int] = {}      # what the last allocate() handed out
        self.next_gc = 0.0
        self.collected = 0

    def start(self) -> None:
        self.informer.start()

    @property
    def ready(self) -> bool:
        return self.informer.listed.is_set()

    @property
    def error(self) -> str:
        return self.informer.error

    # ---- the API's view ---------------------------------------------------------------

    def _drain(self) -> None:
        now = time.monotonic()
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            number = int(event.key.name)
            if event.type == EventType.DELETED:
                self.by_number.pop(number, None)
                self.created.pop(number, None)
            else:
                self.by_number[number] = labels_key(event.obj)
                self.created.setdefault(number, now)

    def _lowest(self) -> dict[str, int]:
        """Labels key -> the lowest number holding it: the one every node uses."""
        best: dict[str, int] = {}
        for number, key in sorted(self.by_number.items(), reverse=True):
            best[key] = number
        return best

    def changed(self) -> bool:
        """The API now says another number for labels handed out (a lower duplicate
        appeared, or an identity in use was deleted): policy must be compiled again."""
        self._drain()
        best = self._lowest()
        return any(best.get(key) != number for key, number in self.assigned.items())

    # ---- IdentityAllocator ------------------------------------------------------------

    def allocate(self, wanted: list[IdentityLabels]) -> dict[IdentityLabels, int]:
        self._drain()
        best = self._lowest()
        out = {}
        for labels in wanted:
            key = labels.key()
            if key not in best:
                best[key] = self._create(labels)
            out[labels] = best[key]
        now = time.monotonic()
        for number in out.values():
            self.last_used[number] = now
        self.assigned = {labels.key(): number for labels, number in out.items()}
        return out

    def known(self) -> dict[str, int]:
        self._drain()
        return self._lowest()

    def _create(self, labels: IdentityLabels) -> int:
        from kubernetes.client.rest import ApiException

        key = labels.key()
        candidate = max(self.by_number, default=FIRST_WORKLOAD_IDENTITY - 1) + 1
        for _ in range(CREATE_ATTEMPTS):
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": str(candidate)},
                    "spec": {"labels": labels.as_strings()}}
            try:
                self.api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
                self._saw(candidate, key)
                log.info("identity %d created for %s", candidate, key)
                return candidate
            except ApiException as exc:
                if exc.status != 409:
                    raise OSError(f"creating identity {candidate} failed: {exc.status} {exc.reason}") from None
            except Exception as exc:  # unreachable, reset, timed out
                raise OSError(f"creating identity {candidate} failed: {exc}") from None
            try:  # taken: by the same labels (another node was first) or by others
                existing = self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL, str(candidate))
            except ApiException as exc:
                if exc.status == 404:
                    continue  # deleted in between: try the same number again
                raise OSError(f"reading identity {candidate} failed: {exc.status} {exc.reason}") from None
            except Exception as exc:
                raise OSError(f"reading identity {candidate} failed: {exc}") from None
            self._saw(candidate, labels_key(existing))
            if labels_key(existing) == key:
                return candidate
            candidate = max(self.by_number) + 1
        raise OSError(f"no identity number for {key} after {CREATE_ATTEMPTS} conflicts")

    def _saw(self, number: int, key: str) -> None:
        self.by_number[number] = key
        self.created.setdefault(number, time.monotonic())

    # ---- garbage collection -----------------------------------------------------------

    def collect_garbage(self, now: float | None = None) -> list[int]:
        """Delete identities unused for the grace period; return their numbers.

        Only call with a whole view of the cluster (after allocate() on every
        pod): an identity counts as used when the last allocation handed it out."""
        now = time.monotonic() if now is None else now
        if now < self.next_gc:
            return []
        self.next_gc = now + min(GC_INTERVAL_S, self.gc_grace)
        from kubernetes.client.rest import ApiException

        self._drain()
        in_use = set(self.assigned.values())
        deleted = []
        for number in sorted(self.by_number):
            if number in in_use:
                continue
            idle_since = max(self.created.get(number, now), self.last_used.get(number, 0.0))
            if now - idle_since < self.gc_grace:
                continue
            try:
                self.api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, str(number))
            except ApiException as exc:
                if exc.status != 404:
                    log.warning("collecting identity %d failed: %s %s", number, exc.status, exc.reason)
                    continue
            except Exception as exc:  # unreachable: try again at the next round
                log.warning("collecting identity %d failed: %s", number, exc)
                break
            self.by_number.pop(number, None)
            self.last_used.pop(number, None)
            deleted.append(number)
        if deleted:
            self.collected += len(deleted)
            log.info("collected %d unused identities: %s", len(deleted), deleted)
        return deleted
