"""The JSON-lines flow exporter: what it writes, what its filters keep, how it rotates."""
from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from agent.api.flow import flow_pb2 as pb
from agent.api.observer import observer_pb2
from agent.observe.exporter import FileExporter, parse_filters
from agent.observe.store import FlowStore


def flow(i: int, verdict=pb.FORWARDED, pod="a") -> pb.Flow:
    f = pb.Flow(verdict=verdict, node_name="n1", source=pb.Endpoint(namespace="t", pod_name=pod),
                IP=pb.IP(source=f"10.0.0.{i % 250}", destination="10.0.1.1"))
    f.time.FromNanoseconds(1_700_000_000_000_000_000 + i)
    return f


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_flow_and_lost_event_is_a_get_flows_response_line(tmp_path):
    store = FlowStore("n1")
    store.sinks.append(FileExporter(tmp_path / "flows.json"))
    store.add_flow(flow(1))
    store.add_lost(pb.PERF_EVENT_RING_BUFFER, 7)
    got = lines(tmp_path / "flows.json")
    assert len(got) == 2
    first = json_format.ParseDict(got[0], observer_pb2.GetFlowsResponse())
    assert first.flow.IP.source == "10.0.0.1" and first.node_name == "n1"
    assert got[1]["lostEvents"]["numEventsLost"] == "7"


def test_allowlist_and_denylist_choose_what_is_written(tmp_path):
    exporter = FileExporter(tmp_path / "drops.json", allow=parse_filters('{"verdict": ["DROPPED"]}'),
                            deny=parse_filters('[{"source_pod": ["t/noisy"]}]'))
    for i, (verdict, pod) in enumerate([(pb.DROPPED, "a"), (pb.FORWARDED, "a"), (pb.DROPPED, "noisy")]):
        exporter.export(observer_pb2.GetFlowsResponse(flow=flow(i, verdict, pod)))
    exporter.close()
    got = lines(tmp_path / "drops.json")
    assert [(g["flow"]["verdict"], g["flow"]["source"]["podName"]) for g in got] == [("DROPPED", "a")]


def test_rotates_by_size_and_keeps_the_backups_asked_for(tmp_path):
    exporter = FileExporter(tmp_path / "flows.json", max_size_mb=2 / 1024, max_backups=2)  # 2 KiB
    for i in range(100):
        exporter.export(observer_pb2.GetFlowsResponse(flow=flow(i)))
    exporter.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["flows.json", "flows.json.1", "flows.json.2"]
    assert all(p.stat().st_size <= 2048 for p in tmp_path.iterdir())
    newest = lines(tmp_path / "flows.json")[-1]
    assert newest["flow"]["IP"]["source"] == "10.0.0.99", "the newest flow is in the current file"


@pytest.mark.parametrize("text", ["{not json", '{"verdict": ["MAYBE"]}', '{"no_such_field": 1}'])
def test_a_bad_filter_is_a_clear_error(text):
    with pytest.raises(ValueError, match="FlowFilter"):
        parse_filters(text)


def test_the_agent_rejects_a_bad_export_filter_before_starting(tmp_path):
    from click.testing import CliRunner

    from agent.main import main

    result = CliRunner().invoke(main, ["--node-name", "n1", "--manifests", str(tmp_path),
                                       "--export-file", str(tmp_path / "f.json"), "--export-allowlist", "{oops"])
    assert result.exit_code == 2 and "--export-allowlist" in result.output
