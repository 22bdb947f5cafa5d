"""Cluster-wide identities through WeftIdentity objects, with the real client
against a server speaking the API's protocol: nodes agree on every number,
conflicts are resolved by the API, duplicates converge on the lowest number,
and unused identities are collected after their grace period."""
from __future__ import annotations

import threading
import time

import pytest

from agent.model.identity import FIRST_WORKLOAD_IDENTITY, IdentityLabels
from agent.sources import kubernetes as k8s_source
from agent.sources.identities import ClusterAllocator
from tests.kubeapi import FakeAPI

WEB = IdentityLabels.of("shop", [("app", "web")], {})
DB = IdentityLabels.of("shop", [("app", "db")], {})
CACHE = IdentityLabels.of("shop", [("app", "cache")], {})


def identity(number: int, labels: IdentityLabels) -> dict:
    return {"apiVersion": "weft.dev/v1", "kind": "WeftIdentity", "metadata": {"name": str(number)},
            "spec": {"labels": labels.as_strings()}}


def wait(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def api():
    server = FakeAPI(bookmark_every=0.2)
    yield server
    server.close()


@pytest.fixture
def node(api, tmp_path):
    """A node's allocator, started and listed; call it again for another node."""
    config = tmp_path / "kubeconfig"
    api.kubeconfig(config)
    stopping = threading.Event()

    def make(start: bool = True, **kwargs) -> ClusterAllocator:
        allocator = ClusterAllocator(k8s_source.api_client(config), stopping, **kwargs)
        if start:
            allocator.start()
            wait(lambda: allocator.ready)
        return allocator
    yield make
    stopping.set()


def in_api(api) -> dict[int, str]:
    return {int(name): ";".join(sorted(obj["spec"]["labels"]))
            for (_, name), obj in api.objects["/apis/weft.dev/v1/weftidentities"].items()}


def test_two_nodes_agree_on_every_number(api, node):
    one, two = node(), node()
    first = one.allocate([WEB, DB])
    assert sorted(first.values()) == [FIRST_WORKLOAD_IDENTITY, FIRST_WORKLOAD_IDENTITY + 1]
    assert in_api(api) == {n: labels.key() for labels, n in first.items()}, "one object per identity"
    wait(lambda: len(two.known()) == 2)
    second = two.allocate([DB, WEB, CACHE])
    assert second[WEB] == first[WEB] and second[DB] == first[DB]
    assert second[CACHE] == FIRST_WORKLOAD_IDENTITY + 2
    assert len(in_api(api)) == 3


def test_a_taken_number_is_read_back_and_the_next_one_tried(api, node):
    api.put(identity(256, DB))   # created by other nodes, not yet seen by this one
    api.put(identity(257, WEB))
    stale = node(start=False)
    assert stale.allocate([WEB, CACHE]) == {WEB: 257, CACHE: 258}
    assert in_api(api) == {256: DB.key(), 257: WEB.key(), 258: CACHE.key()}


def test_duplicates_for_the_same_labels_converge_on_the_lowest(api, node):
    one = node()
    assert one.allocate([WEB]) == {WEB: 256}
    api.put(identity(260, WEB))  # another node's concurrent creation, higher: ignored
    api.put(identity(300, DB))
    wait(lambda: one.known().get(DB.key()) == 300)
    assert not one.changed() and one.allocate([WEB]) == {WEB: 256}
    api.delete("WeftIdentity", "256")  # say the lowest goes away (collected by mistake, or by hand)
    wait(one.changed)
    assert one.allocate([WEB]) == {WEB: 260}, "the remaining duplicate is taken over, nothing created"


def test_unused_identities_are_collected_after_the_grace_period(api, node):
    one = node(gc_grace=30)
    numbers = one.allocate([WEB, DB])
    one.allocate([WEB])  # the db pods are gone
    now = time.monotonic()
    assert one.collect_garbage(now + 5) == [], "not before the grace period"
    one.next_gc = 0
    assert one.collect_garbage(now + 31) == [numbers[DB]]
    assert in_api(api) == {numbers[WEB]: WEB.key()}, "the one in use stays"
    other = node(gc_grace=30)
    other.allocate([])  # a node that has seen no pod yet
    assert other.collect_garbage(now + 5) == [], "a node just started collects nothing at once"


def test_an_unreachable_api_fails_the_allocation_loudly(api, node):
    stale = node(start=False)
    api.close()
    with pytest.raises(OSError):
        stale.allocate([WEB])
