"""The Kubernetes API as a source: list, then watch, per kind, with informer semantics.

One thread per kind (an informer) lists the objects, then watches from the
list's resourceVersion with bookmarks. A watch that ends or breaks resumes from
the last resourceVersion seen, after a backoff when it failed; a 410 Gone
(the version was compacted away) means a new list, diffed against what the
informer knew, so objects deleted meanwhile become DELETED events. A periodic
relist does the same as a safety net. The events are the ones the manifests
source produces, into the same model.

Reconnecting never flushes anything: the agent programs nothing until every
kind has been listed once (`ready`), so an API server unreachable at start
leaves the pinned datapath as it was while the informers retry.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from .events import Event, EventType, diff
from .objects import ManifestError, ObjectKey, validate

log = logging.getLogger(__name__)

# kind -> (API group class of the client, its list-for-all-namespaces method)
RESOURCES = {
    "Namespace": ("CoreV1Api", "list_namespace"),
    "Node": ("CoreV1Api", "list_node"),
    "Pod": ("CoreV1Api", "list_pod_for_all_namespaces"),
    "Service": ("CoreV1Api", "list_service_for_all_namespaces"),
    "EndpointSlice": ("DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces"),
    "NetworkPolicy": ("NetworkingV1Api", "list_network_policy_for_all_namespaces"),
}
WATCH_TIMEOUT_S = 300   # the server ends a watch after this; the informer resumes it
RESYNC_S = 600          # relist and diff this often, whatever the watch said
BACKOFF_S = (0.2, 30.0)  # first and longest wait before retrying a failed call


class Gone(Exception):
    """The API server no longer has the resourceVersion a watch asked for."""


def api_client(kubeconfig: Path | None = None, in_cluster: bool = False):
    from kubernetes import client, config

    if in_cluster:
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None)


class EventQueue(queue.Queue):
    """The informers' events for the agent, which `on_change` wakes at each one."""

    def __init__(self):
        super().__init__()
        self.on_change: Callable[[], None] = lambda: None

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.on_change()


class Informer(threading.Thread):
    def __init__(self, kind: str, list_fn, out: EventQueue, stopping: threading.Event):
        super().__init__(name=f"informer-{kind}", daemon=True)
        self.kind = kind
        self.list_fn = list_fn
        self.out = out
        self.stopping = stopping
        self.known: dict[ObjectKey, dict] = {}
        self.resource_version: str | None = None
        self.listed = threading.Event()
        self.error = ""
        self.relists = 0
        self.watches = 0

    def _key(self, obj: dict) -> tuple[ObjectKey, dict] | None:
        obj = {**obj, "kind": self.kind}
        try:
            return validate(obj, f"the API's {self.kind}")
        except ManifestError as exc:
            log.warning("%s", exc)
            return None

    def relist(self) -> None:
        resp = self.list_fn(_preload_content=False, timeout_seconds=60)
        body = json.loads(resp.data)
        current = {}
        for item in body.get("items") or []:
            keyed = self._key(item)
            if keyed:
                current[keyed[0]] = keyed[1]
        for event in diff(self.known, current):
            self.out.put(event)
        self.known = current
        self.resource_version = body["metadata"]["resourceVersion"]
        self.relists += 1
        self.listed.set()
        self.out.on_change()  # the agent may be waiting for every kind to be listed

    def watch(self, until: float) -> None:
        """Stream events from resource_version until the server ends the watch."""
        from kubernetes.watch.watch import iter_resp_lines

        self.watches += 1
        resp = self.list_fn(watch=True, _preload_content=False, resource_version=self.resource_version,
                            allow_watch_bookmarks=True,
                            timeout_seconds=max(1, int(min(WATCH_TIMEOUT_S, until - time.monotonic()))))
        try:
            for line in iter_resp_lines(resp):
                if not line.strip():
                    continue
                self._event(json.loads(line))
                self.error = ""
                if self.stopping.is_set() or time.monotonic() >= until:
                    return
        finally:
            resp.close()
            resp.release_conn()

    def _event(self, event: dict) -> None:
        obj = event.get("object") or {}
        if event["type"] == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", ""))
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message', '')}")
        if event["type"] != "BOOKMARK":
            keyed = self._key(obj)
            if keyed:
                key, value = keyed
                if event["type"] == "DELETED":
                    self.known.pop(key, None)
                    self.out.put(Event(EventType.DELETED, key, value))
                else:
                    kind = EventType.MODIFIED if key in self.known else EventType.ADDED
                    self.known[key] = value
                    self.out.put(Event(kind, key, value))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version

    def run(self) -> None:
        from kubernetes.client.rest import ApiException

        backoff = BACKOFF_S[0]
        next_resync = 0.0
        while not self.stopping.is_set():
            try:
                if self.resource_version is None or time.monotonic() >= next_resync:
                    self.relist()
                    next_resync = time.monotonic() + RESYNC_S
                self.watch(next_resync)
                backoff = BACKOFF_S[0]
            except (Gone, ApiException) as exc:
                if isinstance(exc, Gone) or exc.status == 410:  # our version was compacted away
                    log.info("%s watch expired (410 Gone): relisting", self.kind)
                    self.resource_version = None
                    continue
                self._failed(f"{exc.status} {exc.reason}")
            except Exception as exc:  # connection refused, reset, timeout, bad JSON
                self._failed(str(exc) or type(exc).__name__)
            else:
                continue
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    def _failed(self, why: str) -> None:
        message = f"Kubernetes API: {self.kind}: {why}; retrying"
        if message != self.error:
            log.warning("%s", message)
        self.error = message


class KubernetesSource:
    """The source interface the agent polls, fed by one informer per kind."""

    def __init__(self, client, kinds: dict[str, tuple[str, str]] = RESOURCES, gc_grace: float | None = None):
        from kubernetes import client as k8s

        from .identities import GC_GRACE_S, ClusterAllocator

        self.queue = EventQueue()
        self.stopping = threading.Event()
        self.generation = 0
        self.informers = [Informer(kind, getattr(getattr(k8s, group)(client), method), self.queue, self.stopping)
                          for kind, (group, method) in kinds.items()]
        # the identity numbers every node agrees on, as WeftIdentity objects
        self.identities = ClusterAllocator(client, self.stopping, GC_GRACE_S if gc_grace is None else gc_grace)
        for informer in self.informers:
            informer.start()
        self.identities.start()

    @property
    def ready(self) -> bool:
        """Every kind and the identities have been listed once: the model is whole
        and may be programmed."""
        return all(i.listed.is_set() for i in self.informers) and self.identities.ready

    @property
    def errors(self) -> list[str]:
        return [i.error for i in [*self.informers, self.identities.informer] if i.error]

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` (from an informer's thread) at every event and every kind
        listed; once now, for what came before."""
        self.queue.on_change = on_change
        on_change()

    def poll(self) -> list[Event] | None:
        """Events since the last poll; None until every kind is listed, then when there are none."""
        if not self.ready:
            return None
        events = []
        while True:
            try:
                events.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if not events:
            return None
        self.generation += 1
        return events

    def close(self) -> None:
        self.stopping.set()
