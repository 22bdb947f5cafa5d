"""The Observer and Agent gRPC services over a unix socket, with the generated client."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api import server as api_server
from agent.api.flow import flow_pb2 as pb
from agent.api.observer import observer_pb2, observer_pb2_grpc
from agent.api.weft import agent_pb2, agent_pb2_grpc
from agent.observe.store import FlowStore


def make_flow(i: int, pod: str = "a") -> pb.Flow:
    f = pb.Flow(verdict=pb.FORWARDED, node_name="n1",
                source=pb.Endpoint(namespace="t", pod_name=pod),
                IP=pb.IP(source=f"10.0.0.{i % 250}", destination="10.0.1.1"))
    f.time.FromNanoseconds(1_700_000_000_000_000_000 + i * 1_000_000_000)
    return f


@pytest.fixture
def api(tmp_path):
    store = FlowStore("n1", capacity=10)
    address = f"unix://{tmp_path}/agent.sock"
    status = lambda: agent_pb2.StatusResponse(node_name="n1", ready=True, synced_generation=3)  # noqa
    server = api_server.serve(address, store, status)
    channel = grpc.insecure_channel(address)
    yield store, observer_pb2_grpc.ObserverStub(channel), agent_pb2_grpc.AgentStub(channel)
    channel.close()
    server.stop(0)


def test_ring_keeps_the_newest_and_counts_all(api):
    store, observer, _ = api
    for i in range(25):
        store.add_flow(make_flow(i))
    got = list(observer.GetFlows(observer_pb2.GetFlowsRequest(number=100)))
    assert len(got) == 10
    assert [r.flow.IP.source for r in got] == [f"10.0.0.{i}" for i in range(15, 25)]
    status = observer.ServerStatus(observer_pb2.ServerStatusRequest())
    assert (status.num_flows, status.max_flows, status.seen_flows) == (10, 10, 25)
    assert all(r.node_name == "n1" for r in got)


def test_number_first_and_time_window(api):
    store, observer, _ = api
    for i in range(6):
        store.add_flow(make_flow(i))
    last2 = list(observer.GetFlows(observer_pb2.GetFlowsRequest(number=2)))
    first2 = list(observer.GetFlows(observer_pb2.GetFlowsRequest(number=2, first=True)))
    assert [r.flow.IP.source for r in last2] == ["10.0.0.4", "10.0.0.5"]
    assert [r.flow.IP.source for r in first2] == ["10.0.0.0", "10.0.0.1"]
    req = observer_pb2.GetFlowsRequest()
    req.since.CopyFrom(make_flow(2).time)
    req.until.CopyFrom(make_flow(3).time)
    assert [r.flow.IP.source for r in observer.GetFlows(req)] == ["10.0.0.2", "10.0.0.3"]


def test_whitelist_and_blacklist(api):
    store, observer, _ = api
    store.add_flow(make_flow(1, "a"))
    store.add_flow(make_flow(2, "b"))
    only_b = observer_pb2.GetFlowsRequest(whitelist=[pb.FlowFilter(source_pod=["t/b"])])
    not_b = observer_pb2.GetFlowsRequest(blacklist=[pb.FlowFilter(source_pod=["t/b"])])
    assert [r.flow.source.pod_name for r in observer.GetFlows(only_b)] == ["b"]
    assert [r.flow.source.pod_name for r in observer.GetFlows(not_b)] == ["a"]


def test_follow_streams_new_flows_once(api):
    store, observer, _ = api
    store.add_flow(make_flow(1))
    stream = observer.GetFlows(observer_pb2.GetFlowsRequest(number=1, follow=True))
    got = [next(stream)]

    def produce():
        time.sleep(0.2)
        for i in range(2, 5):
            store.add_flow(make_flow(i))
    threading.Thread(target=produce).start()
    for _ in range(3):
        got.append(next(stream))
    stream.cancel()
    assert [r.flow.IP.source for r in got] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_lost_events_reach_the_client(api):
    store, observer, _ = api
    store.add_flow(make_flow(1))
    store.add_lost(pb.PERF_EVENT_RING_BUFFER, 42)
    got = list(observer.GetFlows(observer_pb2.GetFlowsRequest(
        whitelist=[pb.FlowFilter(source_pod=["t/nobody"])])))
    assert len(got) == 1 and got[0].lost_events.num_events_lost == 42
    assert got[0].lost_events.source == pb.PERF_EVENT_RING_BUFFER


def test_slow_follower_loses_its_own_flows_and_is_told(monkeypatch, api):
    store, observer, _ = api
    follower = store.subscribe()
    monkeypatch.setattr(follower.queue, "maxsize", 2)
    for i in range(5):
        store.add_flow(make_flow(i))
    assert follower.lost == 3 and len(store) == 5
    store.unsubscribe(follower)


def test_get_nodes_and_agent_status(api):
    _, observer, agent = api
    nodes = observer.GetNodes(observer_pb2.GetNodesRequest()).nodes
    assert [n.name for n in nodes] == ["n1"] and nodes[0].max_flows == 10
    st = agent.Status(agent_pb2.StatusRequest())
    assert st.ready and st.synced_generation == 3


def test_since_beyond_the_buffer_is_best_effort_and_says_so(api, tmp_path):
    from click.testing import CliRunner

    from cli.flows import flows

    store, _, _ = api
    address = f"unix://{tmp_path}/agent.sock"
    for i in range(4):
        store.add_flow(make_flow(i))
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    within = runner.invoke(flows, ["--server", address, "--since", "2023-11-14T22:13:00Z"])
    assert within.exit_code == 0 and "best effort" not in within.stderr, "nothing was overwritten yet"
    for i in range(4, 25):
        store.add_flow(make_flow(i))
    beyond = runner.invoke(flows, ["--server", address, "--since", "2023-11-14T22:13:00Z"])
    assert beyond.exit_code == 0
    assert len(beyond.stdout.splitlines()) == 10, "what the buffer holds is still printed"
    assert "15 older flows were overwritten" in beyond.stderr and "best effort" in beyond.stderr
