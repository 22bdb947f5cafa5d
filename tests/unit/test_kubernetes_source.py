"""The Kubernetes source with the real client against a server speaking the
list/watch protocol: initial lists, live events, a watch cut mid-stream, an
expired resourceVersion (410 Gone), bookmarks, and an unreachable API."""
from __future__ import annotations

import threading
import time

import pytest

from agent.sources import kubernetes as k8s_source
from agent.sources.events import EventType
from tests.kubeapi import FakeAPI


def pod(name: str, ns: str = "x", **labels) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}}


def wait_events(source, want: int, timeout: float = 5.0) -> list:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += source.poll() or []
        time.sleep(0.02)
    return got


@pytest.fixture
def api(tmp_path):
    server = FakeAPI(bookmark_every=0.2)
    server.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    server.put({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    server.put(pod("a", app="web"))
    yield server
    server.close()


@pytest.fixture
def source(api, tmp_path):
    config = tmp_path / "kubeconfig"
    api.kubeconfig(config)
    src = k8s_source.KubernetesSource(k8s_source.api_client(config))
    yield src
    src.close()


def keys(events):
    return [(e.type, e.key.kind, e.key.name) for e in events]


def test_lists_every_kind_then_streams_changes(api, source):
    first = wait_events(source, 3)
    assert source.ready
    assert sorted(keys(first)) == [(EventType.ADDED, "Namespace", "x"), (EventType.ADDED, "Node", "n1"),
                                   (EventType.ADDED, "Pod", "a")]
    assert first[0].obj["kind"] in ("Namespace", "Node", "Pod"), "list items get their kind"
    api.put(pod("b"))
    api.put(pod("a", app="api"))
    api.delete("Pod", "b", "x")
    live = wait_events(source, 3)
    assert keys(live) == [(EventType.ADDED, "Pod", "b"), (EventType.MODIFIED, "Pod", "a"),
                          (EventType.DELETED, "Pod", "b")]
    assert live[1].obj["metadata"]["labels"] == {"app": "api"}


def test_a_watch_cut_mid_stream_resumes_from_the_last_version_without_loss_or_repeat(api, source):
    wait_events(source, 3)
    pods = next(i for i in source.informers if i.kind == "Pod")
    relists = pods.relists
    api.put(pod("b"))
    assert keys(wait_events(source, 1)) == [(EventType.ADDED, "Pod", "b")]
    api.cut_watches()
    api.put(pod("c"))
    got = wait_events(source, 1)
    time.sleep(0.5)
    got += source.poll() or []
    assert keys(got) == [(EventType.ADDED, "Pod", "c")], "each change once"
    assert pods.relists == relists, "resumed by watching from its version, not by a new list"


def test_an_expired_version_relists_and_what_was_deleted_meanwhile_is_deleted(api, source):
    wait_events(source, 3)
    api.cut_watches()
    api.delete("Pod", "a", "x")
    api.put(pod("d"))
    api.compact()  # the watch resumes from a version the server no longer has: 410 Gone
    got = wait_events(source, 2)
    assert sorted(keys(got)) == [(EventType.ADDED, "Pod", "d"), (EventType.DELETED, "Pod", "a")]
    pods = next(i for i in source.informers if i.kind == "Pod")
    assert pods.relists >= 2


def test_bookmarks_move_the_resume_version(api, source):
    wait_events(source, 3)
    api.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "y"}})  # not a Pod
    pods = next(i for i in source.informers if i.kind == "Pod")
    deadline = time.monotonic() + 3
    while int(pods.resource_version) < api.version and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(pods.resource_version) == api.version, "a bookmark told the Pod informer the newer version"


def test_an_unreachable_api_is_not_ready_and_says_so(tmp_path):
    api = FakeAPI()
    config = tmp_path / "kubeconfig"
    api.kubeconfig(config)
    api.close()  # nothing listens any more
    src = k8s_source.KubernetesSource(k8s_source.api_client(config))
    try:
        deadline = time.monotonic() + 5
        while not src.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not src.ready and src.poll() is None, "nothing to program until every kind is listed"
        assert any("Kubernetes API" in e and "retrying" in e for e in src.errors)
    finally:
        src.close()


def test_the_agent_is_woken_at_each_change(api, source):
    woken = threading.Event()
    source.watch(woken.set)
    assert len(wait_events(source, 3)) == 3
    woken.clear()
    time.sleep(0.5)
    assert not woken.is_set() and source.poll() is None, "bookmarks alone change nothing"
    api.put(pod("b"))
    assert woken.wait(5), "an added pod wakes the agent"
    assert keys(source.poll()) == [(EventType.ADDED, "Pod", "b")]
