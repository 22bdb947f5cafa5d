"""The API stays readable by Hubble's tooling, and the generated code is current."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.api.flow import flow_pb2
from agent.api.observer import observer_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ["agent/api/flow/flow.proto", "agent/api/observer/observer.proto", "agent/api/weft/agent.proto"]


def number(message, field: str) -> int:
    return message.DESCRIPTOR.fields_by_name[field].number


@pytest.mark.parametrize("message,field,expected", [
    (flow_pb2.Flow, "time", 1), (flow_pb2.Flow, "verdict", 2), (flow_pb2.Flow, "IP", 5),
    (flow_pb2.Flow, "l4", 6), (flow_pb2.Flow, "source", 8), (flow_pb2.Flow, "destination", 9),
    (flow_pb2.Flow, "node_name", 11), (flow_pb2.Flow, "traffic_direction", 22),
    (flow_pb2.Flow, "drop_reason_desc", 25), (flow_pb2.Flow, "is_reply", 26),
    (flow_pb2.Flow, "interface", 28), (flow_pb2.Flow, "uuid", 34),
    (flow_pb2.FlowFilter, "source_pod", 2), (flow_pb2.FlowFilter, "traffic_direction", 30),
    (observer_pb2.GetFlowsRequest, "number", 1), (observer_pb2.GetFlowsRequest, "follow", 3),
    (observer_pb2.GetFlowsRequest, "whitelist", 6), (observer_pb2.GetFlowsRequest, "first", 9),
    (observer_pb2.GetFlowsResponse, "lost_events", 3), (observer_pb2.GetFlowsResponse, "node_name", 1000),
])
def test_hubble_field_numbers(message, field, expected):
    assert number(message, field) == expected


def test_hubble_package_and_enum_values():
    assert flow_pb2.Flow.DESCRIPTOR.full_name == "flow.Flow"
    assert observer_pb2.DESCRIPTOR.services_by_name["Observer"].full_name == "observer.Observer"
    assert flow_pb2.POLICY_DENIED == 133 and flow_pb2.TO_ENDPOINT == 101 and flow_pb2.AUDIT == 4


def without_generator_versions(path: Path) -> list[str]:
    """The generated code minus the stamps of the grpcio-tools release that made it:
    a newer release from the registry does not make the committed code stale."""
    text = path.read_text()
    text = re.sub(r"GRPC_GENERATED_VERSION = '[^']*'", "GRPC_GENERATED_VERSION = ...", text)
    text = re.sub(r"# Protobuf Python Version: .*", "# Protobuf Python Version: ...", text)
    text = re.sub(r"ValidateProtobufRuntimeVersion\([^)]*\)", "ValidateProtobufRuntimeVersion(...)", text)
    return text.splitlines()


def test_generated_code_is_current(tmp_path):
    pytest.importorskip("grpc_tools")
    for proto in PROTOS:
        (tmp_path / proto).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / proto, tmp_path / proto)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", *PROTOS], check=True, cwd=tmp_path)
    for proto in PROTOS:
        stem = proto[:-len(".proto")]
        for suffix in ("_pb2.py", "_pb2_grpc.py"):
            committed = ROOT / (stem + suffix)
            if committed.exists():
                assert without_generator_versions(committed) == without_generator_versions(tmp_path / (stem + suffix)), \
                    f"{committed} is stale: run scripts/genproto"
